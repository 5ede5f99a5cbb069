"""One cycle for one space: observe, sync, plan, record intent, apply, record outcomes.

Each space is isolated: a failing cloud, store or demand source ends that
space's cycle (or its creations) with one log line and an error in the
report, and the other spaces go on. ``run_all`` runs spaces concurrently in
a bounded pool, so a cycle over many slow clouds takes about as long as the
slowest of them.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, partial
from itertools import compress
from operator import attrgetter, is_
from typing import TypeVar

from vcycle.clock import Clock
from vcycle.connectors.base import Connector
from vcycle.core import delta, health, interruptions, planner, rules, series, spend
from vcycle.core.model import (
    SPOT,
    CloudMachine,
    CreateOrder,
    CycleReport,
    Demand,
    LaunchOutcome,
    MachineRecord,
    Plan,
    ReportError,
    SpaceSnapshot,
)
from vcycle.core.sections import Config, SpaceConfig
from vcycle.core.states import HOLDS_PROCESSORS, MachineState
from vcycle.core.sync import SyncResult
from vcycle.demand.base import BatchSystem, DemandSource, NamedMachines
from vcycle.errors import (
    CloudUnavailable,
    ConnectorError,
    DemandError,
    HandedOn,
    RenderError,
    StaleState,
    StoreError,
    Throttled,
)
from vcycle.loop import accounts, spending
from vcycle.loop.calls import Timed, answer, report_fields
from vcycle.loop.executor import Batch, Executor
from vcycle.loop.holds import Holds
from vcycle.loop.launch import Launch, Renderer, entropy, prepare
from vcycle.loop.retry import Retry
from vcycle.store import SpaceState, Store
from vcycle.store.series import Series

log = logging.getLogger(__name__)
NAME, MANAGER, STATE, PROCESSORS, INTERRUPTION = (
    attrgetter(f) for f in ("name", "manager", "state", "processors", "interruption"))
is_none = partial(is_, None)
HOUSEKEEPING_SECONDS = 600
T = TypeVar("T")


@dataclass
class SpaceContext:
    """Everything one space's cycle needs; built once, used every cycle."""

    config: Config
    space: SpaceConfig
    connector: Connector
    store: Store
    demand_sources: Mapping[str, DemandSource]
    render: Renderer
    clock: Clock
    last_housekeeping: datetime | None = None
    last_accounting: datetime | None = None  # the last look for machines left unaccounted (None: not yet)
    pool: futures.Executor | None = None  # for this space's cloud calls, made on first use (a simulation's: Inline)
    holds: Holds | None = None  # the space's own holds (throttled, quota spent), kept from cycle to cycle
    retry: Retry | None = None  # how transient create and delete answers are asked again (default Retry())
    randomness: Callable[[], bytes] | None = None  # each new machine's identity (default: the secrets module's)
    seen: delta.Seen | None = None  # what the last sync saw and gave out (None: the next pass is a full one)
    mine: tuple[tuple[MachineRecord, ...], Sequence[MachineRecord], bool] | None = None  # the store's records,
    # this manager's of them and whether one of those was interrupted: looked for again only when the store hands
    # out other records
    standing: spend.Standing | None = None  # what the records not accounted yet cost this month, carried forward
    handing_on: Callable[[], bool] | None = None  # whether this manager is stopping and hands the space on: the
    # cycle then ends after its calls' outcomes, leaving accounting and housekeeping to the next holder

    def calls(self) -> futures.Executor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.config.settings.create_workers,
                                           thread_name_prefix=f"vcycle-{self.space.name}")
        return self.pool

    @property
    def name(self) -> str:
        return self.space.name

    @property
    def kept(self) -> Holds:
        if self.holds is None:
            self.holds = Holds(self.space.name)
        return self.holds

    @cached_property
    def named(self) -> dict[str, NamedMachines]:
        """The machinetypes whose demand source hands out named machines (the pilots DIRAC's SiteDirector
        submits), and that source: the configuration says, so it is found once (a protocol's isinstance is
        slow)."""
        found: dict[str, NamedMachines] = {}
        for name, mt in self.space.machinetypes.items():
            source = self.demand_sources.get(mt.demand) if mt.demand is not None else None
            if isinstance(source, NamedMachines):
                found[name] = source
        return found

    @cached_property
    def batch(self) -> tuple[str, BatchSystem] | None:
        """The batch system the space's machines run daemons of, and its demand section's name: the first demand
        source of its machinetypes that says which machines are registered and drains them (HTCondor's), or
        None."""
        for name in sorted({mt.demand for mt in self.space.machinetypes.values() if mt.demand is not None}):
            source = self.demand_sources.get(name)
            if isinstance(source, BatchSystem):
                return name, source
        return None


@dataclass(frozen=True)
class Observation:
    """One look at a space: the store's state, sync's result, the demand and the plan."""

    state: SpaceState
    synced: SyncResult
    plan: Plan
    timings: dict[str, float]
    unrenderable: Mapping[str, str] = dataclasses.field(default_factory=dict)  # machinetype -> why not rendered
    trials: Mapping[CreateOrder, Launch] = dataclasses.field(default_factory=dict)  # prepared while planning
    demand: Mapping[str, Demand] = dataclasses.field(default_factory=dict)
    batch: bool = False  # the space's machines register with a batch system that said which
    spend: Mapping[str, object] | None = None  # the month's money, where the space names prices (core/spend.py)
    looked: int | None = None  # the records the sync looked at; None: all of them (a full pass)


def gather_demand(ctx: SpaceContext) -> dict[str, Demand]:
    """Demand per machinetype that names a source; a failing source makes its machinetypes unknown."""
    wanted: dict[str, list[str]] = collections.defaultdict(list)
    for mt in ctx.space.machinetypes.values():
        if mt.demand is not None:
            wanted[mt.demand].append(mt.name)
    result: dict[str, Demand] = {}
    for source_name, machinetypes in sorted(wanted.items()):
        try:
            found = ctx.demand_sources[source_name].demand(ctx.name)
        except DemandError as exc:
            log.warning("space=%s demand=%s unknown, nothing is created for %s: %s", ctx.name, source_name,
                        " ".join(machinetypes), exc)
            found = {mt: Demand.unknown(str(exc)) for mt in machinetypes}
        result.update({mt: found[mt] for mt in machinetypes if mt in found})
    return result


def _registered(ctx: SpaceContext, draining: frozenset[str]) -> Mapping[str, bool] | None:
    """The batch system's word on the machines' daemons, asked only when a decision needs it: a machinetype
    with retire_idle_seconds or register_timeout_seconds, or an operator's drain."""
    wanted = draining or any(mt.retire_idle_seconds or mt.register_timeout_seconds
                             for mt in ctx.space.machinetypes.values())
    found = ctx.batch if wanted else None
    if found is None:
        return None
    name, batch = found
    try:
        return dict(batch.registered(ctx.name))
    except DemandError as exc:  # no registration, drain or retire decisions on a guess
        log.warning("space=%s batch system %s not asked about the machines' daemons: %s", ctx.name, name, exc)
        return None


def observe(ctx: SpaceContext, now: datetime) -> Observation:
    """Read the store and the cloud, sync and plan, changing nothing. Raises CloudUnavailable, StoreError.

    The store is read before the cloud is listed, so that the listing is never
    older than the records it is compared with. The cloud is asked in one call
    for its listing, then its capacity and flavors (one hand-off to the space's
    call threads, not one per question); while it is in flight, the work that
    does not need its answer goes on: the batch system's word and the demand.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    state, heartbeats, accounted = ctx.store.look(  # one transaction
        ctx.name, spending.month_spent(now) if spending.wanted(ctx.config, ctx.space) else None)
    asking = ["list_machines"]  # what the call is asking now, for the log and the error if it does not answer
    view = ctx.calls().submit(_view, ctx, asking)  # begun after ``now``: listed_at for sync
    manager = ctx.config.settings.manager_name
    if ctx.mine is None or ctx.mine[0] is not state.records:  # the store hands out the same records while unchanged
        ours = _mine(state.records, manager)
        ctx.mine = (state.records, ours, not all(map(is_none, map(INTERRUPTION, ours))))
    _, mine, interrupting = ctx.mine
    timings["store_read_s"] = time.perf_counter() - started
    registered = _registered(ctx, state.draining)
    interrupted = None  # counted in the store (GONE machines too) only while an interrupted machine lives
    if interrupting:
        interrupted = ctx.store.interruptions(ctx.name, now - interruptions.STORM_WINDOW)
    started = time.perf_counter()
    demand = gather_demand(ctx)
    timings["demand_s"] = time.perf_counter() - started
    waited = time.perf_counter()
    machines, quota, flavors = _answer(ctx, view, lambda: asking[0])
    timings["cloud_wait_s"] = time.perf_counter() - waited  # beyond what ran meanwhile
    started = time.perf_counter()
    synced, ctx.seen, looked = delta.sync_since(
        ctx.seen, mine, machines, heartbeats, now, space=ctx.space, settings=ctx.config.settings,
        every=ctx.config.settings.full_sync_cycles, backoffs=state.backoffs, registered=registered, listed_at=now,
        interrupted=interrupted)
    timings["sync_s"] = time.perf_counter() - started
    for warning in synced.warnings:
        log.warning("space=%s %s", ctx.name, warning)
    recent = _recent_idle(ctx) if registered is not None else {}
    spent = ctx.kept.in_force(lambda: _held(synced.records, synced.foreign_processors))
    cooling = {**state.cooldowns, **{(c.machinetype, c.offering): c for c in synced.cooldowns}}
    live = _live_prices(ctx, flavors)
    money, figures, ctx.standing = spending.observe(ctx.config, ctx.space, ctx.store, synced.records, now, live,
                                                    ctx.standing, accounted)
    snapshot = SpaceSnapshot(ctx.name, synced.records, synced.foreign_processors, synced.backoffs, quota, flavors,
                             state.draining, registered, recent_idle=recent, launches=state.launches,
                             cooldowns=cooling, quota_hold=spent, spend=money, prices=live,
                             counts=ctx.seen.counts if ctx.seen is not None else None)
    started = time.perf_counter()
    result = planner.plan(snapshot, demand, ctx.config, now)
    trials, unrenderable = _trials(ctx, result, now)
    if unrenderable:  # planned again without them: their capacity goes to the others
        result = planner.plan(dataclasses.replace(snapshot, unrenderable=unrenderable), demand, ctx.config, now)
    timings["plan_s"] = time.perf_counter() - started
    return Observation(state, synced, result, timings, unrenderable, trials, demand, registered is not None,
                       figures.as_dict() if figures is not None else None, looked)


def _live_prices(ctx: SpaceContext, flavors: Mapping[str, int] | None) -> dict[str, float]:
    """The cloud's current prices of the space's spot offerings (the connector's optional ``prices``: EC2's spot
    price), asked only where the space names prices or caps; when it cannot tell, the configured prices stand."""
    ask = getattr(ctx.connector, "prices", None)
    if ask is None or not (spend.known(ctx.space) or spend.priced(ctx.space, ctx.config.settings)):
        return {}
    wanted = []
    for mt in ctx.space.machinetypes.values():
        found = rules.offerings(mt, flavors)
        if isinstance(found, list):
            wanted += [o for o, _ in found if o.capacity == SPOT]
    if not wanted:
        return {}
    try:
        return dict(ask(wanted))
    except ConnectorError as exc:
        log.warning("space=%s spot prices not known this cycle, the configured ones stand: %s", ctx.name, exc)
        return {}


def _mine(records: tuple[MachineRecord, ...], manager: str) -> Sequence[MachineRecord]:
    """The records this manager keeps (other managers' records are theirs); the ones given, when all are."""
    if set(map(MANAGER, records)) <= {manager, ""}:  # the common case, counted in C
        return records
    return [r for r in records if r.manager in (manager, "")]


def _held(records: Iterable[MachineRecord], foreign: int) -> int:
    """The processors the space holds: ours that hold them, and the machines not ours."""
    records = tuple(records)
    held: int = sum(compress(map(PROCESSORS, records), map(HOLDS_PROCESSORS.__contains__, map(STATE, records))))
    return held + foreign


def _launch_outcomes(ctx: SpaceContext, seen: Observation, changed: Mapping[str, MachineRecord]
                     ) -> dict[str, tuple[LaunchOutcome, ...]] | None:
    """The launch outcomes to keep (core/health.py) once this cycle changed ``changed`` (its records as they are
    now: only a change tells an outcome), saying when a machinetype's health changes; None: none told. The
    executor writes them with its last write."""
    if not changed:
        return None
    told: dict[str, list[LaunchOutcome]] = {}
    before = {r.name: r for r in seen.state.records if r.name in changed}
    for found in health.outcomes(before, changed.values(), ctx.space.machinetypes, seen.batch):
        told.setdefault(found.machinetype, []).append(found)
    if not told:
        return None
    launches = {}
    for name, new in told.items():
        mt, old = ctx.space.machinetypes[name], seen.state.launches.get(name, ())
        launches[name] = health.kept(old, new)
        was, now = health.unhealthy(old, mt), health.unhealthy(launches[name], mt)
        if now and not was:
            log.warning("space=%s machinetype=%s unhealthy: %s", ctx.name, name, now)
        elif was and not now:
            log.info("space=%s machinetype=%s healthy again: %s reached work", ctx.name, name,
                     launches[name][-1].machine)
    return launches


def _recent_idle(ctx: SpaceContext) -> dict[str, tuple[int, ...]]:
    """Each machinetype's idle jobs in the space's last cycles, oldest first (retire_wait_cycles)."""
    wait = max((mt.retire_wait_cycles for mt in ctx.space.machinetypes.values()), default=0)
    points = Series(ctx.store).recent(ctx.name, wait)
    return {name: tuple(int(p.get(name, {}).get("idle", 0)) for _, p in points) for name in ctx.space.machinetypes}


def _answer(ctx: SpaceContext, call: Future[T], what: str | Callable[[], str]) -> T:
    return answer(call, space=ctx.name, api=ctx.space.api, what=what, bound=ctx.space.api_timeout_seconds)


def _view(ctx: SpaceContext, asking: list[str]) -> tuple[list[CloudMachine], int | None, Mapping[str, int] | None]:
    """The cloud's listing, then its capacity and (where a machinetype names flavors) its flavors: one call in the
    space's call threads. ``asking[0]`` says which of them it is asking."""
    machines = ctx.connector.list_machines()
    asking[0] = "capacity and flavors"
    needs_flavors = any(mt.flavor_names for mt in ctx.space.machinetypes.values())
    return machines, ctx.connector.capacity(), ctx.connector.flavors() if needs_flavors else None


def _trials(ctx: SpaceContext, plan: Plan, now: datetime) -> tuple[dict[CreateOrder, Launch], dict[str, str]]:
    """The first create of each machinetype the plan creates, prepared (the executor uses it as it is), and the
    machinetypes whose user-data does not render, with why."""
    trials: dict[CreateOrder, Launch] = {}
    unrenderable: dict[str, str] = {}
    for order in {o.machinetype: o for o in reversed(plan.creates)}.values():
        mt = ctx.space.machinetypes[order.machinetype]
        try:
            trials[order] = prepare(ctx.space, mt, order, manager=ctx.config.settings.manager_name,
                                    render=ctx.render, now=now,
                                    randomness=ctx.randomness() if ctx.randomness is not None else None)
        except (RenderError, OSError) as exc:
            log.error("space=%s machinetype=%s user-data not rendered, nothing created: %s", ctx.name, mt.name, exc)
            unrenderable[mt.name] = str(exc)
    return trials, unrenderable


def run_cycle(ctx: SpaceContext, *, save_report: bool = True) -> CycleReport:
    """One full cycle of one space; never raises for a cloud, store or demand failure."""
    now = ctx.clock()
    started = time.perf_counter()
    slowed = ctx.kept.slowed(now)
    if slowed is not None:
        return _skipped(ctx, now, started, ReportError("throttled", ctx.name, f"skipped: {slowed}"), save_report)
    try:
        seen = observe(ctx, now)
        for decision in seen.plan.decisions:
            if decision.rule == "stall_breaker":
                log.warning("space=%s machinetype=%s %s", ctx.name, decision.machinetype, decision.reason)
        first = Batch(records={r.name: r for r in seen.synced.updated}, history=list(seen.synced.changes),
                      cooldowns=list(seen.synced.cooldowns))
        batch = ctx.batch
        executor = Executor(ctx.space, ctx.connector, ctx.store, manager=ctx.config.settings.manager_name,
                            render=ctx.render, workers=ctx.config.settings.create_workers, clock=ctx.clock,
                            pool=ctx.calls(), drain=batch[1].drain if batch is not None else None,
                            named=ctx.named, retry=ctx.retry, randomness=ctx.randomness or entropy)
        by_name = _by_name(ctx, seen.synced.records)
        doomed = {o.machine for o in seen.plan.deletes} | {o.machine for o in seen.plan.drains}
        records = {n: by_name[n] for n in doomed if n in by_name}
        changed_backoffs = {k: v for k, v in seen.synced.backoffs.items() if seen.state.backoffs.get(k) != v}
        applied = executor.apply(seen.plan, seen.state.version, records, first, changed_backoffs, seen.trials,
                                 standing=(seen.synced.backoffs, seen.state.cooldowns),
                                 launches=partial(_launch_outcomes, ctx, seen))
        final = ChainMap(applied.records, by_name)  # what the executor changed over what sync left
        ctx.kept.after(applied.throttled, applied.quota, lambda: _held(final.values(), seen.synced.foreign_processors),
                       now, ctx.config.settings.cycle_seconds)
        changed = {r.name: final[r.name] for r in seen.synced.updated if r.name in final}
        changed.update(applied.records)
        accounting: list[ReportError] = []
        if ctx.handing_on is None or not ctx.handing_on():
            accounting = _accounting(ctx, now, final, changed)
            _housekeeping(ctx, now)
    except (CloudUnavailable, StoreError, StaleState) as exc:
        ctx.seen = None  # the next sync is a full one
        ctx.kept.after(exc if isinstance(exc, Throttled) else None, None, lambda: 0, now,
                       ctx.config.settings.cycle_seconds)
        (log.info if isinstance(exc, HandedOn) else log.error)("space=%s skipped this cycle: %s", ctx.name, exc)
        return _skipped(ctx, now, started, ReportError("space_skipped", ctx.name, f"skipped: {exc}"), save_report)
    except Exception as exc:  # the per-space boundary: a bug in one space must not stop the others
        ctx.seen = None
        log.exception("space=%s skipped this cycle: unexpected error", ctx.name)
        return _skipped(ctx, now, started, ReportError("space_bug", ctx.name, f"skipped: unexpected error: {exc!r}"),
                        save_report)
    tally = _tally(ctx, seen.synced.records, by_name, applied.records)
    states: collections.Counter[MachineState] = collections.Counter()
    for (_, state), n in tally.items():
        states[state] += n
    states.pop(MachineState.GONE, None)
    counts = {**{f"state_{k.value}": v for k, v in sorted(states.items(), key=lambda i: i[0].value) if v},
              "creates": applied.created,
              "create_failures": applied.create_failures, "deletes": applied.deleted,
              "delete_failures": applied.delete_failures, "foreign_machines": seen.synced.foreign_machines,
              "synced_records": len(seen.synced.records) if seen.looked is None else seen.looked,
              "full_sync": int(seen.looked is None)}
    timings = {**seen.timings, "total_s": time.perf_counter() - started}
    if isinstance(ctx.connector, Timed):
        api_counts, api_timings = report_fields(ctx.connector.take())
        counts.update(api_counts)
        timings.update(api_timings)
    errors = [*applied.errors, *(ReportError("user_data", ctx.name, f"user-data not rendered, no machines created: "
                                             f"{why}", mt) for mt, why in seen.unrenderable.items()), *accounting]
    report = CycleReport(ctx.name, now, ctx.clock(), ok=not errors, counts=counts, decisions=seen.plan.decisions,
                         errors=tuple(errors), timings=timings, warnings=(*seen.synced.warnings, *_notices(ctx, now)),
                         series=_point(ctx, now, seen, applied.records, final, tally), spend=seen.spend)
    log.info("space=%s cycle done: %d created, %d deleted, %d errors in %.2fs", ctx.name, applied.created,
             applied.deleted, len(applied.errors), timings["total_s"])
    if save_report:
        _save_reports(ctx.store, [report])
    return report


def _notices(ctx: SpaceContext, now: datetime) -> tuple[str, ...]:
    """The connector's warnings (optional method ``notices``); a failure there never fails the cycle."""
    notices = getattr(ctx.connector, "notices", None)
    if notices is None:
        return ()
    try:
        return tuple(notices(now))
    except Exception:  # the boundary of an optional, advisory call
        log.exception("space=%s connector notices failed", ctx.name)
        return ()


def _skipped(ctx: SpaceContext, now: datetime, started: float, why: ReportError, save: bool) -> CycleReport:
    report = CycleReport(ctx.name, now, ctx.clock(), ok=False, errors=(why,),
                         timings={"total_s": time.perf_counter() - started})
    if save:
        _save_reports(ctx.store, [report])
    return report


def _kept(ctx: SpaceContext, records: tuple[MachineRecord, ...]) -> delta.Seen | None:
    """What the sync kept, where its counts stand for these very records (core/counts.py), else None."""
    seen = ctx.seen
    return seen if seen is not None and seen.counts.records is records else None


def _by_name(ctx: SpaceContext, records: tuple[MachineRecord, ...]) -> dict[str, MachineRecord]:
    """The synced records by name: as the sync keeps them (which nothing may change), or made here."""
    kept = _kept(ctx, records)
    return kept.last if kept is not None else dict(zip(map(NAME, records), records, strict=True))


def _tally(ctx: SpaceContext, records: tuple[MachineRecord, ...], by_name: Mapping[str, MachineRecord],
           applied: Mapping[str, MachineRecord]) -> collections.Counter[tuple[str, MachineState]]:
    """How many machines of each (machinetype, state) the cycle leaves: the sync's counts (where kept for these
    records, else counted here), with what the executor changed."""
    kept = _kept(ctx, records)
    tally = kept.counts.states.copy() if kept is not None else series.counted(records)
    for name, record in applied.items():
        old = by_name.get(name)
        if old is not None:
            tally[(old.machinetype, old.state)] -= 1
        tally[(record.machinetype, record.state)] += 1
    return tally


def _point(ctx: SpaceContext, now: datetime, seen: Observation, applied: Mapping[str, MachineRecord],
           final: Mapping[str, MachineRecord], tally: Mapping[tuple[str, MachineState], int]) -> series.Point:
    """This cycle's point of the status page's time series."""
    doomed = {o.machine for o in seen.plan.deletes}
    creates = collections.Counter(r.machinetype for r in applied.values()
                                  if r.created_at == now and r.state is not MachineState.CREATE_FAILED)
    deletes = collections.Counter(r.machinetype for r in applied.values()
                                  if r.name in doomed and r.state is MachineState.DELETING)
    aborts = collections.Counter(final[n].machinetype for n in seen.synced.aborted if n in final)
    return series.point(ctx.space.machinetypes, (), seen.demand, creates, deletes, aborts, tally)


def _accounting(ctx: SpaceContext, now: datetime, final: Mapping[str, MachineRecord],
                changed: Mapping[str, MachineRecord]) -> list[ReportError]:
    """APEL and VacMon for the machines that ended (when some did this cycle, at start, and at every
    housekeeping pass for any left over), and the space's VacMon status; the errors met. ``changed``: the records
    this cycle changed (a machine that ended did so this cycle: the store gives no GONE records to a cycle).
    Only the sync ends a machine, and the executor writes the sync's changes before anything else (a cycle
    whose write failed never gets here), so the ones that ended are accounted as they are, not read back; a
    housekeeping pass reads every one the store holds unaccounted."""
    due = ctx.last_accounting is None or now - ctx.last_accounting >= timedelta(seconds=HOUSEKEEPING_SECONDS)
    ended = [r for r in changed.values() if r.state is MachineState.GONE and r.accounted_at is None]
    errors: list[ReportError] = []
    if due or ended:
        try:
            errors = accounts.account(ctx.config, ctx.space, ctx.store, now, None if due else ended)
        except StoreError as exc:
            log.error("space=%s accounting not done this cycle: %s", ctx.name, exc)
            errors = [ReportError("accounting", ctx.name, f"accounting not done: {exc}")]
        if due:
            ctx.last_accounting = now
    if ctx.space.vacmon_hostport:
        live = [r for r in final.values() if r.state is not MachineState.GONE]
        accounts.status(ctx.space, live, ctx.config.settings.manager_name, ctx.config.settings.state_dir, now)
    return errors


def _housekeeping(ctx: SpaceContext, now: datetime) -> None:
    """Forget machines gone for longer than cleanup_hours, at most every HOUSEKEEPING_SECONDS."""
    if ctx.last_housekeeping is not None and now - ctx.last_housekeeping < timedelta(seconds=HOUSEKEEPING_SECONDS):
        return
    ctx.last_housekeeping = now
    purged = ctx.store.purge(ctx.name, now - timedelta(hours=ctx.space.cleanup_hours))
    series = Series(ctx.store)
    series.compact(ctx.name, now - timedelta(days=1))
    series.prune(ctx.name, now - timedelta(days=ctx.config.settings.history_days))
    if purged:
        log.info("space=%s forgot %d machine(s) gone for more than %d hours", ctx.name, purged,
                 ctx.space.cleanup_hours)


def _save_reports(store: Store, reports: Sequence[CycleReport]) -> None:
    try:
        store.add_reports(reports)
    except StoreError as exc:
        log.error("cycle reports of %s not saved: %s", " ".join(r.space for r in reports), exc)


def run_all(contexts: Sequence[SpaceContext], workers: int, *, save_reports: bool = True,
            pool: ThreadPoolExecutor | None = None,
            around: Callable[[str], AbstractContextManager[bool]] | None = None) -> list[CycleReport]:
    """One cycle of every space, concurrently in a bounded pool; reports in the order given.

    A long-lived ``pool`` (the daemon keeps one) saves starting threads every cycle. ``around(space)``, where
    given, is entered for the length of each space's own cycle (a manager's leases: not handed on meanwhile);
    where it gives False, the space is not cycled (its lease was handed on since the list was made).
    """
    if not contexts:
        return []
    glance(contexts, contexts[0].clock())
    own = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=max(1, min(workers, len(contexts))))

    def one(ctx: SpaceContext) -> CycleReport:
        if around is None:
            return run_cycle(ctx, save_report=False)
        with around(ctx.name) as held:
            if not held:
                now = ctx.clock()
                return CycleReport(ctx.name, now, now, ok=False, errors=(
                    ReportError("lease_lost", ctx.name, "not cycled: its lease was handed on"),))
            return run_cycle(ctx, save_report=False)
    try:
        reports = list(pool.map(one, contexts))
    finally:
        if own:
            pool.shutdown()
    if save_reports:
        _save_reports(contexts[0].store, reports)  # one transaction for all spaces
    return reports


def glance(contexts: Sequence[SpaceContext], now: datetime) -> None:
    """Read ahead, in one transaction, what the round's cycles first read of the store (Store.glance: the
    spaces' versions and new heartbeats, the month's spending where a space counts money). Where that read
    fails, each space reads for itself, and meets and reports the failure there."""
    if not contexts:
        return
    money = any(spending.wanted(ctx.config, ctx.space) for ctx in contexts)
    try:
        contexts[0].store.glance([ctx.name for ctx in contexts], spending.month_spent(now) if money else None)
    except StoreError as exc:
        log.debug("the round's read ahead of the store failed, each space reads for itself: %s", exc)


def save_reports(store: Store, reports: Sequence[CycleReport]) -> None:
    """Keep reports gathered elsewhere (from worker processes), in one transaction."""
    if reports:
        _save_reports(store, reports)
