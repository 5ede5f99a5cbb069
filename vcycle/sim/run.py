"""The simulation's driver: a simulated clock, the real cycle of every space, the clouds and the batch system.

At each step (one ``cycle_seconds``): the clouds take back the machines
they interrupt, the batch system runs its jobs on the machines running and
ends the pilots that have nothing to do (their machines power off with
"200 No more work"), running machines heartbeat, and then every space runs
one real cycle (vcycle/loop/cycle.py: sync, planner, executor, store) in
order. The store is an SQLite database in memory; one create at a time and
seeded identities keep the run reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import random
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vcycle.core import identity
from vcycle.core.model import CloudStatus, CreateOrder, Decision, Demand, Heartbeat
from vcycle.core.sections import Config, MachinetypeConfig, SpaceConfig
from vcycle.errors import VcycleError
from vcycle.loop.calls import Inline
from vcycle.loop.cycle import SpaceContext, glance, run_cycle
from vcycle.sim.batch import Batch
from vcycle.sim.clouds import CloudSpec, SimulatedCloud
from vcycle.sim.trace import Job
from vcycle.store import Store

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: every run starts at the same moment
NO_MORE_WORK = "200 No more work"
MAX_SAMPLES = 2000  # points of the report's plots over time


@dataclass(frozen=True, slots=True)
class Sample:
    """The state at one step."""

    at: float  # seconds after the start
    idle: Mapping[str, int]  # machinetype -> idle jobs
    running_jobs: Mapping[str, int]
    machines: Mapping[str, Mapping[str, int]]  # space -> starting, running, other
    cost: Mapping[str, float]  # space -> spent so far


@dataclass
class Result:
    """What a run left: the jobs' outcomes, the samples, the decisions by rule, the money and the machines."""

    batch: Batch
    samples: list[Sample]
    rules: Counter[str]
    cost: dict[str, float]
    core_seconds: float  # processors x seconds the machines ran
    busy_seconds: float  # processors x seconds of the jobs' work
    machines_made: dict[str, int]
    interrupted: dict[str, int]
    failed: dict[str, int]
    cycle_seconds: int
    steps: int
    errors: Counter[str] = field(default_factory=Counter)
    first: dict[str, tuple[Decision, ...]] = field(default_factory=dict)  # each space's first cycle's decisions


class _Source:
    """A demand section, answered by the batch system for the machinetypes that name it."""

    def __init__(self, name: str, batch: Batch, config: Config) -> None:
        self.name = name
        self.batch = batch
        self.config = config

    def demand(self, space: str) -> dict[str, Demand]:
        mts = self.config.spaces[space].machinetypes.values()
        return {mt.name: self.batch.demand(mt.name) for mt in mts if mt.demand == self.name}


def _render(space: SpaceConfig, mt: MachinetypeConfig, name: str, order: CreateOrder, request: str,
            token: str) -> bytes:
    return f"#!/bin/sh\n# simulated machine {name}\n".encode()


def default_machinetype(config: Config) -> str:
    """Where a job naming no configured machinetype goes: the first machinetype that names a demand source,
    else the first."""
    names = [mt for space in config.spaces.values() for mt in space.machinetypes.values()]
    if not names:
        raise VcycleError("the configuration has no machinetype to simulate")
    named = [mt.name for mt in names if mt.demand is not None]
    return (named or [names[0].name])[0]


def simulate(config: Config, clouds: Mapping[str, CloudSpec], jobs: Sequence[Job], *, seed: int = 0,
             until: float | None = None, progress: Callable[[int, int], None] | None = None) -> Result:
    """Run the configuration against the trace ``jobs``, for ``until`` seconds (default: until every job is done
    and every machine gone, or the last arrival and a week)."""
    cycle = config.settings.cycle_seconds
    with tempfile.TemporaryDirectory(prefix="vcycle-simulate-") as directory:
        # the ledger (usage and spend by month) is kept as in production; no APEL message leaves, none is archived
        settings = dataclasses.replace(config.settings, create_workers=1, state_dir=directory,
                                       state_url="sqlite://", manager_name="simulate",
                                       apel_outgoing_dir=None, apel_archive_dir=None)
        spaces = {name: dataclasses.replace(space, vacmon_hostport=()) for name, space in config.spaces.items()}
        config = dataclasses.replace(config, settings=settings, spaces=spaces)
        store = Store.open(settings.state_url)
        try:
            return _run(config, store, clouds, jobs, seed, until, cycle, progress)
        finally:
            store.close()


def _run(config: Config, store: Store, clouds: Mapping[str, CloudSpec], jobs: Sequence[Job], seed: int,
         until: float | None, cycle: int, progress: Callable[[int, int], None] | None) -> Result:
    now = [START]

    def clock() -> datetime:
        return now[0]

    store.clock = clock  # heartbeats are read by when they were written: in simulated time
    machinetypes: dict[str, list[str]] = {}
    for space in config.spaces.values():
        for mt in space.machinetypes:
            machinetypes.setdefault(mt, []).append(space.name)
    batch = Batch(jobs, START, default_machinetype(config), {k: tuple(v) for k, v in machinetypes.items()})
    sources = {name: _Source(name, batch, config) for name in config.demands}
    rng = random.Random(zlib.crc32(f"identities:{seed}".encode()))
    contexts = []
    sim_clouds = {}
    for name, space in sorted(config.spaces.items()):
        cloud = SimulatedCloud(name, clouds.get(name, CloudSpec()), clock, seed)
        sim_clouds[name] = cloud
        contexts.append(SpaceContext(config, space, cloud, store, sources, _render, clock, pool=Inline(),
                                     randomness=lambda: rng.randbytes(identity.ENTROPY_BYTES)))
    last = max((j.arrival for j in jobs), default=0.0)
    limit = until if until is not None else last + 7 * 86400
    steps = int(limit // cycle) + 1
    # the report plots at most MAX_SAMPLES points: a run of known length samples no more (one that ends when its
    # work is done samples every step, and the report takes every n-th)
    stride = max(1, math.ceil(steps / MAX_SAMPLES)) if until is not None else 1
    result = Result(batch, [], Counter(), dict.fromkeys(sim_clouds, 0.0), 0.0, 0.0, dict.fromkeys(sim_clouds, 0),
                    dict.fromkeys(sim_clouds, 0), dict.fromkeys(sim_clouds, 0), cycle, 0)
    heartbeating = {(s.name, mt.name) for s in config.spaces.values() for mt in s.machinetypes.values()
                    if mt.heartbeat_file is not None}
    try:
        for step in range(steps):
            now[0] = START + timedelta(seconds=step * cycle)
            _step(config, store, batch, sim_clouds, contexts, result, heartbeating, now[0], cycle if step else 0,
                  sample=step % stride == 0)
            result.steps = step + 1
            if progress is not None:
                progress(step + 1, steps)
            if until is None and step * cycle > last and batch.done() and \
                    not any(c.machines for c in sim_clouds.values()):
                break
    finally:
        for ctx in contexts:
            if ctx.pool is not None:
                ctx.pool.shutdown(wait=True)
    for name, cloud in sim_clouds.items():
        result.cost[name], ran = cloud.figures(now[0])
        result.core_seconds += ran
        result.interrupted[name] = cloud.interrupted
        result.failed[name] = cloud.failed
        result.machines_made[name] = cloud.counter
    result.busy_seconds = batch.busy(now[0])
    return result


def _step(config: Config, store: Store, batch: Batch, clouds: Mapping[str, SimulatedCloud],
          contexts: Sequence[SpaceContext], result: Result, heartbeating: set[tuple[str, str]], now: datetime,
          seconds: int, *, sample: bool = True) -> None:
    for cloud in clouds.values():
        cloud.interrupt(now, seconds)
    running = {name: [(m.owner.machinetype, m.name, m.processors or 1) for m in cloud.running(now)
                      if m.owner is not None] for name, cloud in clouds.items()}
    ending = batch.step(now, running)
    beats = []
    for space, name in ending:
        clouds[space].stop(name)
        beats.append((space, Heartbeat(name, now, NO_MORE_WORK, now)))
    ended = set(ending)
    for space, alive in running.items():
        beats += [(space, Heartbeat(name, now)) for mt, name, _ in alive
                  if (space, mt) in heartbeating and (space, name) not in ended]
    if beats:
        store.put_heartbeats(beats)
    glance(contexts, now)
    for ctx in contexts:
        report = run_cycle(ctx, save_report=False)
        result.first.setdefault(ctx.name, report.decisions)
        for decision in report.decisions:
            result.rules[decision.rule or decision.action.value] += 1
        for error in report.errors:
            result.errors[error.kind] += 1
    if not sample:
        return
    types = sorted({mt for space in config.spaces.values() for mt in space.machinetypes} | set(batch.idle))
    counts = {mt: batch.counts(mt) for mt in types}
    machines: dict[str, dict[str, int]] = {}
    for name, cloud in clouds.items():
        states = Counter(m.status.value for m in cloud.list_machines())
        machines[name] = {"starting": states.get(CloudStatus.STARTING.value, 0),
                          "running": states.get(CloudStatus.RUNNING.value, 0),
                          "other": sum(states.values()) - states.get(CloudStatus.STARTING.value, 0)
                          - states.get(CloudStatus.RUNNING.value, 0)}
    result.samples.append(Sample((now - START).total_seconds(), {mt: c[0] for mt, c in counts.items()},
                                 {mt: c[1] for mt, c in counts.items()}, machines,
                                 {name: cloud.figures(now)[0] for name, cloud in clouds.items()}))
