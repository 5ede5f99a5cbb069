"""Requests for named machines, kept in the state store: the pilots DIRAC's SiteDirector submitted through the
Vcycle CE, and the cloud nodes Slurm's ResumeProgram asked for (the node's name as the stamp).

A submitted pilot is a *request*: the name of the machine that will run it
(chosen at once, so DIRAC's pilot reference names the machine from the
start), the pilot stamp, and the pilot wrapper the SiteDirector handed over.
The requests wait ``pending`` until a cycle's executor requests their
machines under the space's limits, shares and backoff (``claimed``: the
wrapper, which carries a proxy, is dropped in the same transaction), or an
operator or DIRAC cancels them, or they wait too long (``expired``). Both
sides read the same rows: the CE answers DIRAC from them, across restarts of
either.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from vcycle.core.model import PilotRequest
from vcycle.core.states import STARTING_STATES, WORKING_STATES, MachineState
from vcycle.store import schema
from vcycle.store.sql import Step, Store

P = schema.pilot_requests
M = schema.machines
PENDING, CLAIMED, CANCELLED, EXPIRED = "pending", "claimed", "cancelled", "expired"
BOOTING = tuple(sorted(s.value for s in STARTING_STATES))
WORKING = tuple(sorted(s.value for s in WORKING_STATES))
_CLAIM = update(P).where(P.c.space == bindparam("in_space"), P.c.name == bindparam("pilot"),
                         P.c.state == PENDING).values(state=CLAIMED, wrapper=None, reason="machine requested",
                                                      changed_at=bindparam("now"))


@dataclass(frozen=True, slots=True)
class PilotState:
    """One pilot as the store knows it: its request, and its machine once there is one."""

    name: str
    request: str  # pending, claimed, cancelled, expired
    reason: str
    machine: MachineState | None = None
    shutdown_code: int | None = None
    delete_requested: str | None = None


class PilotBook:
    """Pilot requests of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, space: str, machinetype: str, ce: str, queue: str, pilots: Sequence[tuple[str, str]],
            wrapper: str, now: datetime, reason: str = "submitted by DIRAC's SiteDirector") -> None:
        """Record pilots (machine name, stamp) waiting for machines; all or none."""
        rows = [{"space": space, "name": name, "machinetype": machinetype, "stamp": stamp, "ce": ce,
                 "queue": queue, "state": PENDING, "reason": reason,
                 "requested_at": now, "changed_at": now, "wrapper": wrapper} for name, stamp in pilots]
        if rows:
            with self.store._begin(write=True) as c:
                c.execute(insert(P), rows)

    def pending(self, space: str) -> dict[str, list[PilotRequest]]:
        """The space's waiting pilots by machinetype, oldest first, wrappers included."""
        query = select(P.c.name, P.c.machinetype, P.c.stamp, P.c.requested_at, P.c.wrapper).where(
            P.c.space == space, P.c.state == PENDING).order_by(P.c.requested_at, P.c.name)
        found: dict[str, list[PilotRequest]] = collections.defaultdict(list)
        with self.store._begin() as c:
            for row in c.execute(query):
                found[row.machinetype].append(PilotRequest(row.name, space, row.machinetype, row.stamp,
                                                           row.requested_at, row.wrapper or ""))
        return dict(found)

    def pending_counts(self, space: str) -> dict[str, int]:
        """Per machinetype, the pilots still waiting for vcycle to request their machines."""
        query = select(P.c.machinetype, func.count()).where(P.c.space == space, P.c.state == PENDING).group_by(
            P.c.machinetype)
        with self.store._begin() as c:
            return {mt: int(n) for mt, n in c.execute(query)}

    def waiting(self, space: str) -> dict[str, int]:
        """Per machinetype, the pilots not yet running: pending, or their machines still booting."""
        return {mt: booting for mt, (booting, _running) in self.counts(space).items()}

    def counts(self, space: str, machinetype: str | None = None) -> dict[str, tuple[int, int]]:
        """Per machinetype, (pilots waiting or booting, pilots whose machines run)."""
        joined = P.outerjoin(M, and_(M.c.space == P.c.space, M.c.name == P.c.name))
        query = select(P.c.machinetype, P.c.state, M.c.state.label("machine"), func.count()).select_from(
            joined).where(P.c.space == space, P.c.state.in_((PENDING, CLAIMED))).group_by(
            P.c.machinetype, P.c.state, M.c.state)
        if machinetype is not None:
            query = query.where(P.c.machinetype == machinetype)
        counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        with self.store._begin() as c:
            for mt, request, machine, n in c.execute(query):
                if request == PENDING or machine in BOOTING:
                    counts[mt][0] += n
                elif machine in WORKING:
                    counts[mt][1] += n
        return {mt: (waiting, running) for mt, (waiting, running) in counts.items()}

    def stamps(self, space: str) -> dict[str, tuple[str, str, str]]:
        """Stamp -> (name, request state, machine state or "") of the space's newest pending or claimed request
        with that stamp."""
        joined = P.outerjoin(M, and_(M.c.space == P.c.space, M.c.name == P.c.name))
        query = select(P.c.stamp, P.c.name, P.c.state, M.c.state.label("machine")).select_from(joined).where(
            P.c.space == space, P.c.state.in_((PENDING, CLAIMED))).order_by(P.c.requested_at, P.c.name)
        with self.store._begin() as c:
            return {row.stamp: (row.name, row.state, row.machine or "") for row in c.execute(query)}

    def states(self, space: str, names: Iterable[str]) -> dict[str, PilotState]:
        """What the store knows of these pilots (names it does not know are left out)."""
        wanted = sorted(set(names))
        joined = P.outerjoin(M, and_(M.c.space == P.c.space, M.c.name == P.c.name))
        query = select(P.c.name, P.c.state, P.c.reason, M.c.state.label("machine"), M.c.shutdown_code,
                       M.c.delete_requested).select_from(joined).where(P.c.space == space, P.c.name.in_(wanted))
        with self.store._begin() as c:
            rows = c.execute(query).all() if wanted else []
        return {r.name: PilotState(r.name, r.state, r.reason, MachineState(r.machine) if r.machine else None,
                                   r.shutdown_code, r.delete_requested) for r in rows}

    def cancel(self, space: str, names: Iterable[str], reason: str, now: datetime) -> int:
        """Cancel the pilots among ``names`` still waiting for a machine; how many were."""
        wanted = sorted(set(names))
        if not wanted:
            return 0
        with self.store._begin(write=True) as c:
            done = c.execute(update(P).where(P.c.space == space, P.c.name.in_(wanted), P.c.state == PENDING)
                             .values(state=CANCELLED, reason=reason, wrapper=None, changed_at=now))
        return int(done.rowcount)

    def claim(self, space: str, names: Sequence[str], now: datetime) -> Step:
        """A step of a store write: these pilots leave the queue for the machines the write requests, their
        wrappers (which carry proxies) dropped."""
        rows = [{"in_space": space, "pilot": name, "now": now} for name in names]

        def run(connection: Connection) -> None:
            if rows:
                connection.execute(_CLAIM, rows)

        return run

    def expire(self, space: str, timeout_seconds: int, now: datetime) -> int:
        """Give up the pilots that waited longer than ``timeout_seconds`` for a machine; how many."""
        if self.store.readonly:
            return 0  # a store opened for reading (vcycle plan) gives nothing up
        requested_before = now - timedelta(seconds=timeout_seconds)
        with self.store._begin(write=True) as c:
            done = c.execute(update(P).where(P.c.space == space, P.c.state == PENDING,
                                             P.c.requested_at < requested_before)
                             .values(state=EXPIRED, wrapper=None, changed_at=now,
                                     reason=f"no machine requested by {now.isoformat(timespec='seconds')}"))
        return int(done.rowcount)
