"""The executor: applies a Plan through a connector, recording intent before acting.

For every create it names the machine, renders its user-data and commits a
REQUESTED record with the request id before the cloud is called; for every
delete it commits DELETING first. Only then are the cloud calls made,
concurrently and bounded, and their outcomes committed. A crash anywhere
leaves records that the next sync resolves: a requested machine appears and
is adopted, or its request times out; a delete that did not happen is
retried. Connector errors become behaviour: QuotaExceeded and LaunchRejected
back off the machinetype, CloudUnavailable leaves the request to sync,
NotFound on delete is success.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from vcycle import mjf, rules
from vcycle.config import MachinetypeConfig, SpaceConfig
from vcycle.connectors.base import Connector
from vcycle.errors import (
    CloudUnavailable,
    DemandError,
    LaunchRejected,
    NotFound,
    QuotaExceeded,
    RenderError,
    StaleState,
)
from vcycle.model import (
    Backoff,
    CloudMachine,
    CreateOrder,
    DeleteOrder,
    DrainOrder,
    LaunchSpec,
    MachineRecord,
    PilotRequest,
    Plan,
    StatusChange,
    new_record,
    transition,
)
from vcycle.states import MachineState
from vcycle.store import Store

log = logging.getLogger(__name__)
S = MachineState
_NAME_ALPHABET = string.ascii_lowercase + string.digits


def new_machine_name(machinetype: str) -> str:
    """``vcycle-MACHINETYPE-xxxxxxxxxx``, as the original vcycle named machines."""
    randomness = secrets.token_bytes(10)  # one system call; 252 = 7 x 36 keeps every character equally likely
    chosen = [b % 36 for b in randomness if b < 252]
    while len(chosen) < 10:
        chosen += [b % 36 for b in secrets.token_bytes(10) if b < 252]
    return f"vcycle-{machinetype}-" + "".join(_NAME_ALPHABET[i] for i in chosen[:10])


def new_request_id() -> str:
    return uuid.uuid4().hex


# (space, machinetype, machine name, create order, request id, machine token) -> user-data bytes
Renderer = Callable[[SpaceConfig, MachinetypeConfig, str, CreateOrder, str, str], bytes]


def machine_urls(space: SpaceConfig, name: str) -> dict[str, str]:
    """The machine's MJF and joboutputs URLs on vcycle's endpoint (metadata on clouds, as the old vcycle set)."""
    base = f"https://{space.https_host}:{space.https_port}/machines/{space.name}/{name}"
    return {kind: f"{base}/{kind}" for kind in ("machinefeatures", "jobfeatures", "joboutputs")}


def new_token() -> tuple[str, str]:
    """A machine's one-time token for the HTTPS endpoint, and the hash that alone is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Applied:
    """What applying one plan did."""

    version: int
    created: int = 0
    deleted: int = 0
    create_failures: int = 0
    delete_failures: int = 0
    errors: list[str] = field(default_factory=list)
    records: dict[str, MachineRecord] = field(default_factory=dict)


@dataclass
class Batch:
    """Records and history to commit together."""

    records: dict[str, MachineRecord] = field(default_factory=dict)
    history: list[tuple[str, StatusChange]] = field(default_factory=list)
    backoffs: dict[str, Backoff] = field(default_factory=dict)

    def put(self, record: MachineRecord, new_entries: int = 1) -> MachineRecord:
        self.records[record.name] = record
        self.history.extend((record.name, h) for h in record.history[-new_entries:] if new_entries)
        return record


class Executor:
    """Applies plans for one space through one connector."""

    def __init__(self, space: SpaceConfig, connector: Connector, store: Store, *, manager: str, render: Renderer,
                 workers: int = 8, name_factory: Callable[[str], str] = new_machine_name,
                 request_factory: Callable[[], str] = new_request_id,
                 clock: Callable[[], datetime] | None = None, pool: ThreadPoolExecutor | None = None,
                 drain: Callable[[str, str], None] | None = None,
                 pilots: Callable[[], Mapping[str, Sequence[PilotRequest]]] | None = None,
                 pilot_machinetypes: frozenset[str] = frozenset()) -> None:
        self.space = space
        # the machinetypes whose machines run pilots DIRAC's SiteDirector submitted, and where those wait
        self.pilots, self.pilot_machinetypes = pilots, pilot_machinetypes
        self.drain = drain  # asks the batch system to drain (space, machine); raises DemandError
        self.connector = connector
        self.store = store
        self.manager = manager
        self.render = render
        self.workers = max(1, workers)
        self.name_factory = name_factory
        self.request_factory = request_factory
        self.clock = clock
        self.pool = pool  # shared between cycles; one is made per apply if not given

    def apply(self, plan: Plan, version: int, records: Mapping[str, MachineRecord], first: Batch | None = None,
              backoffs: Mapping[str, Backoff] | None = None) -> Applied:
        """Commit intent (with ``first``, sync's changes), act, commit outcomes. StaleState before acting."""
        now = plan.now
        intent = first or Batch()
        applied = Applied(version)
        errors = applied.errors
        claimed: list[str] = []
        launches = self._intents(plan, now, intent, errors, claimed)
        deletes = [self._deleting(order, records[order.machine], now, intent) for order in plan.deletes
                   if order.machine in records]
        drains = [self._draining(order, records[order.machine], now, intent) for order in plan.drains
                  if order.machine in records and records[order.machine].state is S.RUNNING]
        if intent.records or intent.history or backoffs or intent.backoffs:
            version = self.store.write(self.space.name, version, intent.records.values(), intent.history,
                                       backoffs={**(backoffs or {}), **intent.backoffs}, claimed=claimed)
        applied.version = version
        for record in drains:  # quick calls to the batch system, not the cloud: made here, in order
            self._drain(record, errors)
        if not launches and not deletes:
            applied.records = dict(intent.records)
            return applied  # nothing to do in the cloud, nothing more to record
        outcome = Batch()
        now = self.clock() if self.clock is not None else now  # outcomes carry the time they happened
        pool = self.pool or ThreadPoolExecutor(max_workers=self.workers)
        try:
            creating = [pool.submit(self._create, record, spec, now, outcome, errors) for record, spec in launches]
            deleting = [pool.submit(self._delete, record, now, outcome, errors) for record in deletes]
            created = [f.result() for f in creating]
            removed = [f.result() for f in deleting]
        finally:
            if pool is not self.pool:
                pool.shutdown()
        applied.created, applied.create_failures = created.count(True), created.count(False)
        applied.deleted, applied.delete_failures = removed.count(True), removed.count(False)
        if outcome.records or outcome.backoffs:
            try:
                applied.version = self.store.write(self.space.name, version, outcome.records.values(),
                                                   outcome.history, backoffs=outcome.backoffs or None)
            except StaleState as exc:
                applied.errors.append(f"outcomes not recorded ({exc}); the next sync reconciles them")
        applied.records = {**intent.records, **outcome.records}
        return applied

    # --- intent ------------------------------------------------------------------------

    def _waiting_pilots(self, plan: Plan) -> dict[str, collections.deque[PilotRequest]]:
        """The pilots waiting for the machines this plan creates, oldest first (read only when needed)."""
        if self.pilots is None or not any(o.machinetype in self.pilot_machinetypes for o in plan.creates):
            return {}
        return {mt: collections.deque(found) for mt, found in self.pilots().items()}

    def _intents(self, plan: Plan, now: datetime, batch: Batch, errors: list[str],
                 claimed: list[str]) -> list[tuple[MachineRecord, LaunchSpec]]:
        refused: set[str] = set()
        launches = []
        waiting = self._waiting_pilots(plan)
        for order in plan.creates:
            if order.machinetype in refused:
                continue
            mt = self.space.machinetypes[order.machinetype]
            if order.machinetype in self.pilot_machinetypes:  # the machine runs the oldest waiting pilot
                queue = waiting.get(order.machinetype)
                if not queue:
                    continue  # the pilots were cancelled or expired since the demand was read
                pilot = queue.popleft()
                order = dataclasses.replace(order, pilot=pilot)
                name = pilot.name
            else:
                name = self.name_factory(order.machinetype)
            request = self.request_factory()
            token, token_hash = new_token()
            try:
                user_data = self.render(self.space, mt, name, order, request, token)
            except (RenderError, OSError) as exc:
                refused.add(order.machinetype)
                message = f"space={self.space.name} machinetype={mt.name}: user-data not rendered, no machines " \
                          f"created: {exc}"
                log.error(message)
                errors.append(message)
                continue
            record = new_record(name=name, space=self.space.name, machinetype=mt.name, state=S.REQUESTED,
                                processors=order.processors, now=now, request_id=request,
                                reason="intent: " + order.reason + (f"; runs DIRAC pilot stamp {order.pilot.stamp}"
                                                                    if order.pilot else ""),
                                manager=self.manager, flavor=order.flavor,
                                hs06=order.hs06, shutdown_at=order.shutdown_at, token_hash=token_hash,
                                features=json.dumps(mjf.features(mt, order.processors, now, order.shutdown_at,
                                                                 self.space.shutdown_time), sort_keys=True))
            spec = LaunchSpec(name, request, self.space.name, mt.name, self.manager, order.processors, order.flavor,
                              None, mt.root_image, user_data, order.shutdown_at, machine_urls(self.space, name),
                              token)
            launches.append((batch.put(record), spec))
            if order.pilot is not None:  # it leaves the queue with the machine's record (not if never rendered)
                claimed.append(order.pilot.name)
        return launches

    def _deleting(self, order: DeleteOrder, record: MachineRecord, now: datetime, batch: Batch) -> MachineRecord:
        changes: dict[str, object] = {"delete_attempts": record.delete_attempts + 1, "last_delete_at": now}
        if record.shutdown_code is None and order.code is not None:
            changes.update(shutdown_code=order.code, shutdown_text=order.message)
            if order.code in rules.ABORT_CODES and record.state in (S.RUNNING, S.STARTING):
                # vcycle ends it for a fault of the machine (its startd never joined): an abort, so back off
                batch.backoffs[record.machinetype] = Backoff(record.machinetype, now, f"{record.name} deleted "
                                                             f"with '{order.code} {order.message}'")
        moved = transition(record, S.DELETING, now, "delete: " + order.reason, **changes)
        log.info("space=%s machinetype=%s machine=%s delete: %s", self.space.name, record.machinetype, record.name,
                 order.reason)
        return batch.put(moved)

    def _draining(self, order: DrainOrder, record: MachineRecord, now: datetime, batch: Batch) -> MachineRecord:
        log.info("space=%s machinetype=%s machine=%s drain: %s", self.space.name, record.machinetype, record.name,
                 order.reason)
        return batch.put(transition(record, S.DRAINING, now, "drain: " + order.reason))

    def _drain(self, record: MachineRecord, errors: list[str]) -> None:
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"
        if self.drain is None:
            errors.append(f"{where}: no batch system to ask for the drain")
            return
        try:
            self.drain(self.space.name, record.name)
        except DemandError as exc:  # it stays DRAINING: deleted after retire_timeout_seconds at the latest
            log.warning("%s drain not sent: %s", where, exc)
            errors.append(f"{where}: drain not sent: {exc}")

    # --- cloud calls ----------------------------------------------------------------------

    def _create(self, record: MachineRecord, spec: LaunchSpec, now: datetime, batch: Batch,
                errors: list[str]) -> bool:
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"
        try:
            machine: CloudMachine = self.connector.create_machine(spec)
        except (QuotaExceeded, LaunchRejected) as exc:
            kind = "quota" if isinstance(exc, QuotaExceeded) else "rejected"
            log.error("%s create refused (%s): %s", where, kind, exc)
            batch.put(transition(record, S.CREATE_FAILED, now, f"create refused ({kind}): {exc}"))
            batch.backoffs[record.machinetype] = Backoff(record.machinetype, now, f"create refused ({kind}): {exc}")
            errors.append(f"{where}: create refused ({kind}): {exc}")
            return False
        except CloudUnavailable as exc:
            log.warning("%s create not confirmed, left to the next sync: %s", where, exc)
            errors.append(f"{where}: create not confirmed: {exc}")
            return False
        except Exception as exc:  # the per-action boundary: a connector bug must not stop the cycle
            log.exception("%s create failed unexpectedly", where)
            errors.append(f"{where}: create failed unexpectedly: {exc!r}")
            return False
        log.info("%s created (cloud id %s)", where, machine.id)
        moved = dataclasses.replace(record, cloud_id=machine.id, processors=machine.processors or record.processors)
        batch.put(transition(moved, S.STARTING, now, f"create accepted by the cloud (id {machine.id})"))
        return True

    def _delete(self, record: MachineRecord, now: datetime, batch: Batch, errors: list[str]) -> bool:
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"
        try:
            self.connector.delete_machine(record.cloud_id or record.name)
        except NotFound:
            return True
        except CloudUnavailable as exc:
            log.warning("%s delete failed, retried later: %s", where, exc)
            batch.put(transition(record, S.DELETE_FAILED, now, f"delete failed: {exc}"))
            errors.append(f"{where}: delete failed: {exc}")
            return False
        except Exception as exc:  # the per-action boundary
            log.exception("%s delete failed unexpectedly", where)
            batch.put(transition(record, S.DELETE_FAILED, now, f"delete failed unexpectedly: {exc!r}"))
            errors.append(f"{where}: delete failed unexpectedly: {exc!r}")
            return False
        return True
