"""The executor: applies a Plan through a connector, recording intent before acting.

For every create it prepares the machine (vcycle/loop/launch.py: identity,
user-data) and commits a REQUESTED record with the request id before the
cloud is called; for every delete it commits DELETING first. Only then are
the cloud calls made, ``create_workers`` at a time, and their outcomes
committed. No call is waited for longer than the space's
``api_timeout_seconds`` (per round of workers): a call that has not answered
then is left to the next sync, which adopts or gives up the create and sends
the delete again. A crash anywhere leaves records that the next sync resolves: a
requested machine appears and is adopted, or its request times out; a delete
that did not happen is retried. What a connector error means is a property
of its class (vcycle/errors.py): ``backoff`` errors fail the create and back
off the machinetype; other ``made_nothing`` errors (a spent quota, a cloud
asking to slow down) fail it and hold the space (vcycle/loop/cycle.py); the
rest leave the request to the next sync, once a transient one was asked again
within the call (vcycle/loop/retry.py); NotFound on delete is success. NoCapacity is the offering's, not the
machinetype's: the create falls through to the order's next offering of the same
size (vcycle/loop/offers.py), and the offering cools.

Machinetypes whose demand source hands out named machines (a ``NamedMachines``
source, such as the pilots DIRAC's SiteDirector submits) take one waiting
request per create: its name and its pilot. The source's claim of those
requests is committed in the same transaction as the REQUESTED records.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from vcycle.connectors.base import Connector
from vcycle.core import rules
from vcycle.core.model import (
    Backoff,
    CloudMachine,
    Cooldown,
    CreateOrder,
    DeleteOrder,
    DrainOrder,
    LaunchOutcome,
    LaunchSpec,
    MachineRecord,
    Offering,
    PilotRequest,
    Plan,
    ReportError,
    StatusChange,
    transition,
)
from vcycle.core.sections import SpaceConfig
from vcycle.core.states import STARTING_STATES, MachineState
from vcycle.demand.base import NamedMachines
from vcycle.errors import (
    ConnectorError,
    DemandError,
    NoCapacity,
    NotFound,
    QuotaExceeded,
    RenderError,
    StaleState,
    Throttled,
)
from vcycle.loop.calls import settle
from vcycle.loop.launch import Launch, Renderer, entropy, prepare
from vcycle.loop.offers import Offers
from vcycle.loop.retry import Retry
from vcycle.store import Step, Store

log = logging.getLogger(__name__)
S = MachineState


@dataclass
class Applied:
    """What applying one plan did."""

    version: int
    created: int = 0
    deleted: int = 0
    create_failures: int = 0
    delete_failures: int = 0
    errors: list[ReportError] = field(default_factory=list)
    records: dict[str, MachineRecord] = field(default_factory=dict)
    throttled: Throttled | None = None  # the cloud asked to slow down: the space is left alone for a while
    quota: tuple[int, QuotaExceeded] | None = None  # the fewest processors a create was refused for its quota


@dataclass(frozen=True)
class Outcome:
    """What one cloud call did: the record it moved, the backoff it caused, the error it met."""

    create: bool  # a create (else a delete)
    done: bool  # the cloud confirmed it
    record: MachineRecord | None = None
    backoff: Backoff | None = None
    error: ReportError | None = None
    cooldowns: tuple[Cooldown, ...] = ()  # offerings the create found without capacity


@dataclass
class Batch:
    """Records and history to commit together."""

    records: dict[str, MachineRecord] = field(default_factory=dict)
    history: list[tuple[str, StatusChange]] = field(default_factory=list)
    backoffs: dict[str, Backoff] = field(default_factory=dict)
    cooldowns: list[Cooldown] = field(default_factory=list)  # offerings found without room (sync's, here)

    def put(self, record: MachineRecord) -> MachineRecord:
        """Keep ``record``, new or just moved, and its last state change."""
        self.records[record.name] = record
        if record.last is not None:
            self.history.append((record.name, record.last))
        return record


class Executor:
    """Applies plans for one space through one connector."""

    def __init__(self, space: SpaceConfig, connector: Connector, store: Store, *, manager: str, render: Renderer,
                 workers: int = 8, randomness: Callable[[], bytes] = entropy,
                 clock: Callable[[], datetime] | None = None, pool: futures.Executor | None = None,
                 drain: Callable[[str, str], None] | None = None,
                 named: Mapping[str, NamedMachines] | None = None, retry: Retry | None = None) -> None:
        self.space = space
        self.connector = connector
        self.store = store
        self.manager = manager
        self.render = render
        self.workers = max(1, workers)
        self.randomness = randomness  # ENTROPY_BYTES for each new machine's identity
        self.clock = clock
        self.pool = pool  # shared between cycles; one is made per apply if not given
        self.drain = drain  # asks the batch system to drain (space, machine); raises DemandError
        self.named = dict(named or {})  # machinetype -> the source handing out its machines' names
        self.retry = retry or Retry()  # transient answers asked again within the call (vcycle/loop/retry.py)

    def apply(self, plan: Plan, version: int, records: Mapping[str, MachineRecord], first: Batch | None = None,
              backoffs: Mapping[str, Backoff] | None = None,
              prepared: Mapping[CreateOrder, Launch] | None = None, *,
              standing: tuple[Mapping[str, Backoff], Mapping[tuple[str, str], Cooldown]] | None = None,
              launches: Callable[[Mapping[str, MachineRecord]], Mapping[str, tuple[LaunchOutcome, ...]] | None]
              | None = None) -> Applied:
        """Commit intent (with ``first``, sync's changes), act, commit outcomes. StaleState before acting.

        ``prepared`` holds launches already made for some of the plan's orders (the cycle's trial renders):
        each is used once, for its order, instead of rendering that machine again. ``standing`` holds the
        backoffs and offering cooldowns in force before this apply: a new one counts the failures in a row
        from them (core/rules.py). ``launches``, given every record this apply changed, says the machinetypes'
        launch outcomes to keep (core/health.py); they are written with the last of its writes."""
        now = plan.now
        self._standing = standing or ({}, {})
        intent = first or Batch()
        applied = Applied(version)
        self._fallbacks: dict[str, tuple[Offering, ...]] = {}  # machine -> the offerings its create falls through to
        self._offers = Offers(self.space.api_timeout_seconds / 2)  # a probe hung that long: call anyway, in time
        errors = applied.errors
        steps: list[Step] = []
        made = self._intents(plan, now, intent, errors, steps, dict(prepared or {}))
        deleting = [self._deleting(order, records[order.machine], now, intent, errors) for order in plan.deletes
                    if order.machine in records]
        drains = [self._draining(order, records[order.machine], now, intent) for order in plan.drains
                  if order.machine in records and records[order.machine].state is S.RUNNING]
        deletes = [record for record in deleting if record is not None]
        calls = bool(made or deletes)
        told = launches(intent.records) if launches is not None and not calls and intent.records else None
        if intent.records or intent.history or backoffs or intent.backoffs or intent.cooldowns:
            version = self.store.write(self.space.name, version, intent.records.values(), intent.history,
                                       backoffs={**(backoffs or {}), **intent.backoffs}, steps=steps,
                                       cooldowns=[self._cooldown(c) for c in intent.cooldowns], launches=told)
        applied.version = version
        for record in drains:  # quick calls to the batch system, not the cloud: made here, in order
            self._drain(record, errors)
        if not calls:
            applied.records = dict(intent.records)
            return applied  # nothing to do in the cloud, nothing more to record
        now = self.clock() if self.clock is not None else now  # outcomes carry the time they happened
        outcome = Batch()
        results = self._call(made, deletes, now)
        cooldowns: list[Cooldown] = []
        for result in results:
            if result.record is not None:
                outcome.put(result.record)
            if result.backoff is not None:
                outcome.backoffs[result.backoff.machinetype] = result.backoff
            if result.error is not None:
                errors.append(result.error)
            cooldowns.extend(self._cooldown(c) for c in result.cooldowns)
        if isinstance(self._offers.stopped, Throttled):
            applied.throttled = self._offers.stopped
        applied.quota = self._offers.quota
        applied.created = sum(r.done for r in results if r.create)
        applied.create_failures = sum(not r.done for r in results if r.create)
        applied.deleted = sum(r.done for r in results if not r.create)
        applied.delete_failures = sum(not r.done for r in results if not r.create)
        applied.records = {**intent.records, **outcome.records}
        told = launches(applied.records) if launches is not None else None
        if outcome.records or outcome.backoffs or cooldowns or told:
            try:
                applied.version = self.store.write(self.space.name, version, outcome.records.values(),
                                                   outcome.history, backoffs=outcome.backoffs or None,
                                                   cooldowns=cooldowns, launches=told)
            except StaleState as exc:
                errors.append(ReportError("store", self.space.name,
                                          f"outcomes not recorded ({exc}); the next sync reconciles them"))
        return applied

    # --- intent ------------------------------------------------------------------------

    def _waiting(self, plan: Plan) -> dict[str, collections.deque[PilotRequest]]:
        """The requests waiting for the machines this plan creates, oldest first (read only when needed)."""
        sources = {id(source): source for mt, source in self.named.items()
                   if any(o.machinetype == mt for o in plan.creates)}
        waiting: dict[str, collections.deque[PilotRequest]] = {}
        for source in sources.values():
            waiting.update((mt, collections.deque(found)) for mt, found in source.waiting(self.space.name).items()
                           if self.named.get(mt) is source)
        return waiting

    def _intents(self, plan: Plan, now: datetime, batch: Batch, errors: list[ReportError], steps: list[Step],
                 prepared: dict[CreateOrder, Launch]) -> list[tuple[MachineRecord, LaunchSpec]]:
        refused: set[str] = set()
        launches = []
        waiting = self._waiting(plan)
        claims: dict[int, tuple[NamedMachines, list[str]]] = {}
        for order in plan.creates:
            if order.machinetype in refused:
                continue
            mt = self.space.machinetypes[order.machinetype]
            source = self.named.get(order.machinetype)
            if source is not None:  # the machine runs the oldest waiting request's pilot, under its name
                queue = waiting.get(order.machinetype)
                if not queue:
                    continue  # the requests were cancelled or expired since the demand was read
                order = dataclasses.replace(order, pilot=queue.popleft())
            try:
                launch = prepared.pop(order, None) or prepare(self.space, mt, order, manager=self.manager,
                                                              render=self.render, now=now,
                                                              randomness=self.randomness())
            except (RenderError, OSError) as exc:
                refused.add(order.machinetype)
                error = ReportError("user_data", self.space.name, f"user-data not rendered, no machines created: "
                                    f"{exc}", mt.name)
                log.error("%s", error)
                errors.append(error)
                continue
            launches.append((batch.put(launch.record), launch.spec))
            self._fallbacks[launch.record.name] = order.fallbacks
            if source is not None and order.pilot is not None:  # it leaves the queue with the machine's record
                claims.setdefault(id(source), (source, []))[1].append(order.pilot.name)
        steps.extend(source.claim(self.space.name, names, now) for source, names in claims.values())
        return launches

    def _backoff(self, found: Backoff) -> Backoff:
        """``found`` with its failures in a row, counted from the backoff in force."""
        mt = self.space.machinetypes.get(found.machinetype)
        return rules.next_backoff(self._standing[0].get(found.machinetype), found, mt) if mt is not None else found

    def _cooldown(self, found: Cooldown) -> Cooldown:
        """``found`` with its failures in a row, counted from the offering's cooldown in force."""
        mt = self.space.machinetypes.get(found.machinetype)
        current = self._standing[1].get((found.machinetype, found.offering))
        return rules.next_cooldown(current, found, mt) if mt is not None else found

    def _deleting(self, order: DeleteOrder, record: MachineRecord, now: datetime, batch: Batch,
                  errors: list[ReportError]) -> MachineRecord | None:
        if record.cloud_id is None:  # a cloud deletes by its id only: the next listing gives it
            errors.append(ReportError("delete_unknown_id", self.space.name, "delete waits: the cloud has not listed "
                                      "the machine's id yet", record.machinetype, record.name))
            return None
        changes: dict[str, object] = {"delete_attempts": record.delete_attempts + 1, "last_delete_at": now}
        if record.shutdown_code is None and order.code is not None:
            changes.update(shutdown_code=order.code, shutdown_text=order.message)
            if (order.abort or order.code in rules.ABORT_CODES) and record.state in (S.RUNNING, *STARTING_STATES):
                # vcycle ends it for a fault of the machine (its startd never joined): an abort, so back off
                batch.backoffs[record.machinetype] = self._backoff(Backoff(
                    record.machinetype, now, f"{record.name} deleted with '{order.code} {order.message}'"))
        moved = transition(record, S.DELETING, now, "delete: " + order.reason, **changes)
        log.info("space=%s machinetype=%s machine=%s delete: %s", self.space.name, record.machinetype, record.name,
                 order.reason)
        return batch.put(moved)

    def _draining(self, order: DrainOrder, record: MachineRecord, now: datetime, batch: Batch) -> MachineRecord:
        log.info("space=%s machinetype=%s machine=%s drain: %s", self.space.name, record.machinetype, record.name,
                 order.reason)
        return batch.put(transition(record, S.DRAINING, now, "drain: " + order.reason))

    def _drain(self, record: MachineRecord, errors: list[ReportError]) -> None:
        def failed(message: str) -> None:
            errors.append(ReportError("drain_failed", self.space.name, message, record.machinetype, record.name))

        if self.drain is None:  # no batch daemon: the machine's heartbeat answer tells it, and its cloud may too
            drain_machine = getattr(self.connector, "drain_machine", None)
            if drain_machine is not None and record.cloud_id is not None:
                try:
                    drain_machine(record.cloud_id)
                except ConnectorError as exc:
                    failed(f"drain not sent: {exc}")
            return
        try:
            self.drain(self.space.name, record.name)
        except DemandError as exc:  # it stays DRAINING: deleted after retire_timeout_seconds at the latest
            log.warning("space=%s machinetype=%s machine=%s drain not sent: %s", self.space.name,
                        record.machinetype, record.name, exc)
            failed(f"drain not sent: {exc}")

    # --- cloud calls ----------------------------------------------------------------------

    def _call(self, launches: list[tuple[MachineRecord, LaunchSpec]], deletes: list[MachineRecord],
              now: datetime) -> list[Outcome]:
        """Make the creates and deletes, ``workers`` at a time, waiting for them no longer than the space's
        ``api_timeout_seconds`` per round of calls. A call still running then is left to the next sync."""
        pool = self.pool or ThreadPoolExecutor(max_workers=self.workers)
        calls: dict[Future[Outcome], MachineRecord] = {}
        try:
            for record, spec in launches:
                calls[pool.submit(self._create, record, spec, now)] = record
            for record in deletes:
                calls[pool.submit(self._delete, record, now)] = record
            bound = self.space.api_timeout_seconds * math.ceil(len(calls) / self.workers)
            done, late = settle(calls, space=self.space.name, api=self.space.api, bound=bound,
                                what=lambda late: f"{late} of {len(calls)} create/delete calls have")
            results = [call.result() for call in calls if call in done]
            for call in late:
                call.cancel()  # not begun: never made; begun: its answer is no longer waited for
                results.append(self._late(calls[call], bound))
            return results
        finally:
            if pool is not self.pool:
                pool.shutdown(wait=False, cancel_futures=True)

    def _late(self, record: MachineRecord, bound: float) -> Outcome:
        """A call that did not answer in time: the next complete listing says what the cloud did."""
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"
        if record.state is S.REQUESTED:
            log.warning("%s create not confirmed within %gs (api_timeout_seconds), left to the next sync", where,
                        bound)
            return Outcome(True, False, error=ReportError(
                "create_not_confirmed", self.space.name, f"create not confirmed: no answer within {bound:g}s "
                "(api_timeout_seconds)", record.machinetype, record.name))
        log.warning("%s delete not confirmed within %gs (api_timeout_seconds), sent again if still listed", where,
                    bound)
        return Outcome(False, False, error=ReportError(
            "delete_failed", self.space.name, f"delete not confirmed: no answer within {bound:g}s "
            "(api_timeout_seconds)", record.machinetype, record.name))

    def _create(self, record: MachineRecord, spec: LaunchSpec, now: datetime) -> Outcome:
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"

        def failed(kind: str, message: str, moved: MachineRecord | None = None,
                   backoff: Backoff | None = None) -> Outcome:
            return Outcome(True, False, moved, backoff,
                           ReportError(kind, self.space.name, message, record.machinetype, record.name))

        deadline = self.retry.clock() + self.space.api_timeout_seconds

        def create(each: LaunchSpec) -> CloudMachine:
            return self.retry.call(lambda: self.connector.create_machine(each), what=f"{where} create",
                                   deadline=deadline)

        try:
            tried = self._offers.create(create, spec, self._fallbacks.get(record.name, ()), now)
        except Exception as exc:  # the per-action boundary: a connector bug must not stop the cycle
            log.exception("%s create failed unexpectedly", where)
            return failed("create_bug", f"create failed unexpectedly: {exc!r}")
        for cooldown in tried.cooled:
            log.warning("%s no capacity on %s, cooled for offering_cooldown_seconds: %s", where,
                        cooldown.offering or "the offering", cooldown.reason)
        error = tried.error
        if tried.machine is None and (error is None or isinstance(error, NoCapacity)):  # every offering is full
            why = f"{rules.NO_CAPACITY} on any offering (" + "; ".join(
                [f"{c.offering or 'the offering'}: {c.reason}" for c in tried.cooled]
                + [f"{o}: none, as another create found this cycle" for o in tried.skipped]
            ) + "): no backoff, the offerings cool"
            log.warning("%s %s", where, why)
            moved = transition(record, S.CREATE_FAILED, now, why)
            return Outcome(True, False, moved, None, ReportError("create_refused_capacity", self.space.name, why,
                                                                 record.machinetype, record.name), tried.cooled)
        if error is not None:
            if not error.made_nothing:  # the cloud may yet have made it: the next sync adopts it or gives it up
                log.warning("%s create not confirmed, left to the next sync: %s", where, error)
                return dataclasses.replace(failed("create_not_confirmed", f"create not confirmed: {error}"),
                                           cooldowns=tried.cooled)
            why = f"{rules.CREATE_REFUSED} ({error.kind}): {error}"
            if not error.backoff:  # the space's quota or pace: the machinetype is not to blame
                log.warning("%s %s", where, why)
                return dataclasses.replace(failed(f"create_refused_{error.kind}", why,
                                                  transition(record, S.CREATE_FAILED, now, why)),
                                           cooldowns=tried.cooled)
            log.error("%s %s", where, why)
            return dataclasses.replace(failed(f"create_refused_{error.kind}", why,
                                              transition(record, S.CREATE_FAILED, now, why),
                                              self._backoff(Backoff(record.machinetype, now, why))),
                                       cooldowns=tried.cooled)
        machine = tried.machine
        assert machine is not None
        made = tried.offering or spec.offering
        fell = f" on {made} ({spec.offering} had no capacity)" if made != spec.offering else ""
        log.info("%s created (cloud id %s)%s", where, machine.id, fell)
        moved = dataclasses.replace(record, cloud_id=machine.id, processors=machine.processors or record.processors,
                                    flavor=made.flavor, zone=machine.zone or made.zone,
                                    capacity=made.capacity or record.capacity)
        return Outcome(True, True, transition(moved, S.STARTING, now,
                                              f"create accepted by the cloud (id {machine.id}){fell}"),
                       cooldowns=tried.cooled)

    def _delete(self, record: MachineRecord, now: datetime) -> Outcome:
        where = f"space={self.space.name} machinetype={record.machinetype} machine={record.name}"
        assert record.cloud_id is not None  # _deleting left out those without one

        def failed(kind: str, message: str) -> Outcome:
            return Outcome(False, False, transition(record, S.DELETE_FAILED, now, message),
                           error=ReportError(kind, self.space.name, message, record.machinetype, record.name))

        cloud_id = record.cloud_id
        try:
            self.retry.call(lambda: self.connector.delete_machine(cloud_id), what=f"{where} delete",
                            deadline=self.retry.clock() + self.space.api_timeout_seconds)
        except NotFound:
            return Outcome(False, True)
        except ConnectorError as exc:
            log.warning("%s delete failed, retried later: %s", where, exc)
            return failed("delete_failed", f"delete failed: {exc}")
        except Exception as exc:  # the per-action boundary
            log.exception("%s delete failed unexpectedly", where)
            return failed("delete_bug", f"delete failed unexpectedly: {exc!r}")
        return Outcome(False, True)
