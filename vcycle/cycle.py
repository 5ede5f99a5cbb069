"""One cycle for one space: observe, sync, plan, record intent, apply, record outcomes.

Each space is isolated: a failing cloud, store or demand source ends that
space's cycle (or its creations) with one log line and an error in the
report, and the other spaces go on. ``run_all`` runs spaces concurrently in
a bounded pool, so a cycle over many slow clouds takes about as long as the
slowest of them.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle import planner
from vcycle.config import Config, SpaceConfig
from vcycle.connectors.base import Connector
from vcycle.demand import DemandSource
from vcycle.errors import CloudUnavailable, DemandError, StaleState, StoreError
from vcycle.executor import Batch, Executor, Renderer
from vcycle.model import CycleReport, Demand, Plan, SpaceSnapshot
from vcycle.states import MachineState
from vcycle.store import SpaceState, Store
from vcycle.sync import SyncResult, sync

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


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

    @property
    def name(self) -> str:
        return self.space.name


@dataclass(frozen=True)
class Observation:
    """One look at a space: the store's state, sync's result, the demand and the plan."""

    state: SpaceState
    synced: SyncResult
    plan: Plan
    timings: dict[str, float]


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


def observe(ctx: SpaceContext, now: datetime) -> Observation:
    """Read the store and the cloud, sync and plan, changing nothing. Raises CloudUnavailable, StoreError."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    state = ctx.store.load(ctx.name)
    heartbeats = ctx.store.heartbeats(ctx.name)
    timings["store_read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    machines = ctx.connector.list_machines()
    quota = ctx.connector.capacity()
    needs_flavors = any(mt.flavor_names for mt in ctx.space.machinetypes.values())
    flavors = ctx.connector.flavors() if needs_flavors else {}
    timings["cloud_read_s"] = time.perf_counter() - started
    synced = sync(state.records, machines, heartbeats, now, space=ctx.space, settings=ctx.config.settings,
                  backoffs=state.backoffs)
    started = time.perf_counter()
    demand = gather_demand(ctx)
    timings["demand_s"] = time.perf_counter() - started
    snapshot = SpaceSnapshot(ctx.name, synced.records, synced.foreign_processors, synced.backoffs, quota, flavors,
                             state.draining)
    started = time.perf_counter()
    result = planner.plan(snapshot, demand, ctx.config, now)
    timings["plan_s"] = time.perf_counter() - started
    return Observation(state, synced, result, timings)


def run_cycle(ctx: SpaceContext) -> CycleReport:
    """One full cycle of one space; never raises for a cloud, store or demand failure."""
    now = ctx.clock()
    started = time.perf_counter()
    try:
        seen = observe(ctx, now)
        before = {r.name: r for r in seen.state.records}
        changed = {r.name: r for r in seen.synced.records if before.get(r.name) is not r}
        first = Batch(records=changed, history=list(seen.synced.changes))
        executor = Executor(ctx.space, ctx.connector, ctx.store, manager=ctx.config.settings.manager_name,
                            render=ctx.render, workers=ctx.config.settings.create_workers, clock=ctx.clock)
        records = {r.name: r for r in seen.synced.records}
        applied = executor.apply(seen.plan, seen.state.version, records, first, seen.synced.backoffs)
        ctx.store.purge(ctx.name, now - timedelta(hours=ctx.space.cleanup_hours))
    except (CloudUnavailable, StoreError, StaleState, Exception) as exc:  # the per-space boundary
        if isinstance(exc, CloudUnavailable | StoreError | StaleState):
            log.error("space=%s skipped this cycle: %s", ctx.name, exc)
        else:
            log.exception("space=%s skipped this cycle: unexpected error", ctx.name)
        report = CycleReport(ctx.name, now, ctx.clock(), ok=False, errors=(f"skipped: {exc}",),
                             timings={"total_s": time.perf_counter() - started})
        _save_report(ctx, report)
        return report
    records.update(applied.records)
    states = collections.Counter(r.state.value for r in records.values() if r.state is not MachineState.GONE)
    counts = {**{f"state_{k}": v for k, v in sorted(states.items())}, "creates": applied.created,
              "create_failures": applied.create_failures, "deletes": applied.deleted,
              "delete_failures": applied.delete_failures, "foreign_machines": seen.synced.foreign_machines}
    timings = {**seen.timings, "total_s": time.perf_counter() - started}
    report = CycleReport(ctx.name, now, ctx.clock(), ok=not applied.errors, counts=counts,
                         decisions=seen.plan.decisions, errors=tuple(applied.errors), timings=timings)
    log.info("space=%s cycle done: %d created, %d deleted, %d errors in %.2fs", ctx.name, applied.created,
             applied.deleted, len(applied.errors), timings["total_s"])
    _save_report(ctx, report)
    return report


def _save_report(ctx: SpaceContext, report: CycleReport) -> None:
    try:
        ctx.store.add_report(report)
    except StoreError as exc:
        log.error("space=%s cycle report not saved: %s", ctx.name, exc)


def run_all(contexts: Sequence[SpaceContext], workers: int) -> list[CycleReport]:
    """One cycle of every space, concurrently in a bounded pool; reports in the order given."""
    if not contexts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(contexts)))) as pool:
        return list(pool.map(run_cycle, contexts))
