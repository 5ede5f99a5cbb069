"""Machines and their batch daemons: register timeouts, drains and retirement.

Where a space's machines run a batch daemon (an HTCondor startd that
advertises its vcycle machine name), the batch system says which machines
are registered in it and which have work. From that, per machinetype:

- a running machine whose daemon never registered within
  ``register_timeout_seconds`` is deleted with '500 Startd did not join the
  pool' (an abort: the machinetype backs off);
- a running machine whose daemon has had no work for
  ``retire_idle_seconds``, while the machinetype has more idle machines than
  its idle jobs fill, is asked to drain (longest idle first), and so is
  every registered machine of a machinetype an operator drained;
- a draining machine is deleted once its daemon has left the pool, or after
  ``retire_timeout_seconds``.

Pure: no clock, no I/O; ``now`` and the observations are given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from vcycle.model import Action, Decision, DeleteOrder, Demand, DrainOrder, MachineRecord
from vcycle.states import MachineState

if TYPE_CHECKING:  # pragma: no cover - types only
    from vcycle.config import SpaceConfig

S = MachineState
REGISTER_TIMEOUT = (500, "Startd did not join the pool")
DRAINED = (100, "Shutdown as requested: drained")


def batch_orders(records: Sequence[MachineRecord], registered: Mapping[str, bool], space: SpaceConfig,
                 demand: Mapping[str, Demand], needed: Callable[[str], int | None], draining: Collection[str],
                 skip: Collection[str], now: datetime) -> tuple[list[DrainOrder], list[DeleteOrder], list[Decision]]:
    """Drains, deletes and their decisions for the machines not already in ``skip`` (being deleted).

    ``needed(machinetype)`` is how many machines the machinetype's idle jobs fill (None: unknown).
    """
    drains: list[DrainOrder] = []
    deletes: list[DeleteOrder] = []
    decisions: list[Decision] = []
    idle: dict[str, list[MachineRecord]] = {}

    def delete(record: MachineRecord, code: tuple[int, str], reason: str) -> None:
        deletes.append(DeleteOrder(space.name, record.machinetype, record.name, record.cloud_id, *code, reason))
        decisions.append(Decision(Action.DELETE, space.name, record.machinetype, reason, record.name))

    def drain(record: MachineRecord, reason: str) -> None:
        drains.append(DrainOrder(space.name, record.machinetype, record.name, reason))
        decisions.append(Decision(Action.DRAIN, space.name, record.machinetype, reason, record.name))

    for record in records:
        mt = space.machinetypes.get(record.machinetype)
        if mt is None or record.name in skip or record.state not in (S.RUNNING, S.DRAINING):
            continue
        verdict = _verdict(record, registered, mt.values, record.machinetype in draining or "*" in draining, now)
        if verdict is None:
            continue
        if verdict[0] == "delete":
            delete(record, verdict[1], verdict[2])
        elif verdict[0] == "drain":
            drain(record, verdict[2])
        else:
            idle.setdefault(record.machinetype, []).append(record)
    for name, machines in sorted(idle.items()):
        _retire(name, machines, space, demand.get(name), needed(name), now, drain)
    return drains, deletes, decisions


Verdict = tuple[str, tuple[int, str], str]  # ("delete" | "drain" | "idle", shutdown code, reason)


def _verdict(record: MachineRecord, registered: Mapping[str, bool], options: Mapping[str, object],
             operator_drained: bool, now: datetime) -> Verdict | None:
    """What one running or draining machine's batch daemon calls for, if anything."""
    if record.state is S.DRAINING:
        since = int((now - record.state_since).total_seconds())
        limit = options.get("retire_timeout_seconds") or 3600
        if record.name not in registered:
            return "delete", DRAINED, "drained: its startd has left the pool"
        if since >= limit:  # type: ignore[operator]
            return "delete", DRAINED, f"still draining after {since}s (retire_timeout_seconds {limit})"
        return None
    if record.name not in registered:
        limit = options.get("register_timeout_seconds") or 0
        up = int((now - (record.started_at or record.created_at)).total_seconds())
        if limit and record.registered_at is None and up >= limit:  # type: ignore[operator]
            return "delete", REGISTER_TIMEOUT, (f"its startd has not joined the pool {up}s after the machine "
                                                f"started (register_timeout_seconds {limit})")
        return None
    if operator_drained:
        return "drain", DRAINED, "drained by an operator: its startd finishes its jobs and takes no more"
    return None if registered[record.name] else ("idle", DRAINED, "")


def _retire(name: str, machines: list[MachineRecord], space: SpaceConfig, demand: Demand | None,
            needed: int | None, now: datetime, drain: Callable[[MachineRecord, str], None]) -> None:
    """Drain the machines of ``name`` idle longer than retire_idle_seconds beyond what the idle jobs fill."""
    after = space.machinetypes[name].values.get("retire_idle_seconds") or 0
    if not after or demand is None or not demand.known or needed is None:
        return  # never configured, or the demand is not known: nothing is retired on a guess
    cutoff = now - timedelta(seconds=after)
    long_idle = sorted((r for r in machines if r.idle_since is not None and r.idle_since <= cutoff),
                       key=lambda r: (r.idle_since, r.name))
    surplus = len(machines) - max(needed, 0)
    for record in long_idle[:max(surplus, 0)]:
        idle_for = int((now - record.idle_since).total_seconds()) if record.idle_since else 0
        drain(record, f"its startd has had no claimed slot for {idle_for}s (retire_idle_seconds {after}); "
                      f"{len(machines)} {name} machines are idle and the idle jobs fill {max(needed, 0)}")
