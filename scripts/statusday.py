"""A store that looks like a day of a site's life, for the status page's browser tests and benchmarks/ui.py.

``simulate_day`` runs real cycles (vcycle/loop/cycle.py) over in-memory
clouds (vcycle.testing.FakeConnector) on a FakeClock: machines boot, run,
finish or abort, heartbeat, and are deleted and replaced; each cycle writes
its report and its time-series point, as the daemon does. ``add_machines``
writes many machines into one space at once (a big site's table), with
histories and heartbeats, without running cycles for them.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta
from typing import Any

from vcycle.core import mjf
from vcycle.core.model import CloudStatus, Demand, Heartbeat, MachineRecord, StatusChange
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.errors import QuotaExceeded
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

S = MachineState
DAY_CONFIG = """
[settings]
manager_name = vcycle-demo.example.org
max_create_fraction = 0.5
history_days = 14
cycle_seconds = {cycle_seconds}
https_listen = {listen}
https_cert = {cert}
https_key = {key}
state_url = {state_url}
state_dir = {state_dir}
{extra}

[demand queue]
type = file
path = /unused

[space cern-prod]
api = fake
processors_limit = 48
gocdb_sitename = CERN-PROD

[machinetype cern-prod lhcb]
user_data = ud
demand = queue
target_share = 2
processors_limit = 32
backoff_seconds = 600
fizzle_seconds = 600
max_wallclock_seconds = 28800

[machinetype cern-prod atlas]
user_data = ud
target_share = 1
backoff_seconds = 600
fizzle_seconds = 600
max_wallclock_seconds = 14400

[space ral-cloud]
api = fake
processors_limit = 24

[machinetype ral-cloud belle2]
user_data = ud
demand = queue
target_share = 1
backoff_seconds = 900
fizzle_seconds = 300
max_wallclock_seconds = 21600

[space big-site]
api = fake
processors_limit = 500000

[machinetype big-site cms]
user_data = ud
target_share = 1
backoff_seconds = 600
fizzle_seconds = 600
"""


def render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
    return b"#!/bin/sh\n"


class DayDemand:
    """Idle jobs that rise through the working day and fall at night (a function of the clock: reproducible)."""

    name = "queue"

    def __init__(self, clock: FakeClock, cloud: dict[str, FakeConnector]) -> None:
        self.clock = clock
        self.clouds = cloud

    def demand(self, space: str) -> dict[str, Demand]:
        hour = self.clock().hour + self.clock().minute / 60
        idle = round(30 * max(0.0, math.sin(math.pi * (hour - 6) / 14)))
        running = sum(1 for m in self.clouds[space].ours() if m.status is CloudStatus.RUNNING)
        return {mt: Demand(idle_jobs=idle, running_jobs=running) for mt in ("lhcb", "belle2")}


def simulate_day(config: Config, store: Store, clock: FakeClock, *, spaces: tuple[str, ...],
                 hours: float = 24, step_seconds: int = 120, seed: int = 7) -> dict[str, FakeConnector]:
    """Cycles of ``spaces`` every ``step_seconds`` for ``hours`` of the clock; the clouds, as they end."""
    rng = random.Random(seed)
    clouds = {name: FakeConnector(clock=clock, boot_seconds=240) for name in spaces}
    sources = {"queue": DayDemand(clock, clouds)}
    contexts = [SpaceContext(config, config.spaces[name], clouds[name], store, sources, render, clock)
                for name in spaces]
    for _ in range(int(hours * 3600 / step_seconds)):
        for ctx in contexts:
            run_cycle(ctx)
        beats = []
        for name, cloud in clouds.items():
            for machine in cloud.ours():
                if machine.status is not CloudStatus.RUNNING:
                    continue
                beats.append((name, Heartbeat(machine.name, clock(), address="10.0.0.1")))
                if rng.random() < 0.02:  # a pilot ends: early ones count as aborts, later ones as done
                    cloud.set_status(machine.name, CloudStatus.STOPPED, "SHUTOFF")
            if rng.random() < 0.01:  # now and then the cloud is full
                cloud.inject("create", QuotaExceeded("Quota exceeded for cores: Requested 1, but already used 48 of "
                                                      "48 cores"))
        store.put_heartbeats(beats)
        clock.advance(step_seconds)
    return clouds


def add_machines(config: Config, store: Store, space: str, count: int, now: datetime, seed: int = 11) -> None:
    """``count`` machines in ``space``, mostly running, created over the last day, with MJF and heartbeats."""
    rng = random.Random(seed)
    mt = next(iter(config.spaces[space].machinetypes.values()))
    states = [S.RUNNING] * 80 + [S.STARTING] * 8 + [S.DRAINING] * 4 + [S.STOPPED] * 3 + [S.DELETING] * 3 + \
        [S.FAILED] * 2
    records: list[MachineRecord] = []
    history: list[tuple[str, StatusChange]] = []
    for i in range(count):
        created = now - timedelta(seconds=rng.randrange(86400))
        state = rng.choice(states)
        name = f"{space}-{i:06d}"
        since = created + timedelta(seconds=rng.randrange(60, 600))
        last = StatusChange(state, since, f"the cloud reports {state.value}", "test data")
        features = mjf.features(mt, 8, created, created + timedelta(seconds=mt.max_wallclock_seconds), None)
        heartbeat = now - timedelta(seconds=rng.choice((20, 40, 90, 200, 700, 2000, 9000))) \
            if state in (S.RUNNING, S.DRAINING) and rng.random() < 0.95 else None
        records.append(MachineRecord(
            name=name, space=space, machinetype=mt.name, state=state, processors=8, created_at=created,
            request_id=f"req-{i}", manager=config.settings.manager_name, cloud_id=f"i-{i:08x}",
            zone=rng.choice(("zone-a", "zone-b", "zone-c")), started_at=since if state is not S.STARTING else None,
            heartbeat_at=heartbeat, features=json.dumps(features, separators=(",", ":")), last=last))
        history += [(name, StatusChange(S.REQUESTED, created, "demand: create", "intent written")),
                    (name, StatusChange(S.STARTING, created + timedelta(seconds=30), "the cloud lists it",
                                        "create confirmed")), (name, last)]
    store.write(space, store.load(space).version, records, history=history)

