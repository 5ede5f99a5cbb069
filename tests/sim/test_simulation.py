"""A 300-cycle simulation: boot delays, failures, quotas, vanishing machines, scripted demand.

FakeConnector in memory, a real SQLite store, FakeClock; a seeded random
script plays the cloud and the pilots. After every cycle the invariants are
checked: limits never exceeded, every machine tagged as ours in the cloud is
known to the store, nothing that is not ours is ever deleted.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from vctest import load_text

from vcycle.core.model import CloudStatus, Demand, Heartbeat
from vcycle.core.states import MachineState
from vcycle.errors import CloudUnavailable, DemandError, LaunchRejected, QuotaExceeded
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

CONFIG = """
[settings]
manager_name = sim
max_create_fraction = 0.2
request_timeout_seconds = 300
starting_timeout_seconds = 600
delete_retry_seconds = 120

[demand batch]
type = file
path = /unused

[space sim]
api = fake
processors_limit = 40

[machinetype sim big]
user_data = ud
target_share = 2
min_processors = 4
processors_limit = 24
max_starting_processors = 8
backoff_seconds = 300
fizzle_seconds = 120
max_wallclock_seconds = 7200
heartbeat_file = hb
heartbeat_seconds = 600

[machinetype sim small]
user_data = ud
target_share = 1
backoff_seconds = 300
fizzle_seconds = 120
max_wallclock_seconds = 3600

[machinetype sim queue]
user_data = ud
target_share = 1
demand = batch
jobs_per_machine = 2
backoff_seconds = 120
fizzle_seconds = 60
"""


class ScriptedDemand:
    """Idle jobs for 'queue' that rise and fall; now and then the source fails."""

    name = "batch"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cycle = 0

    def demand(self, space: str) -> dict[str, Demand]:
        if self.rng.random() < 0.05:
            raise DemandError("schedd unreachable")
        idle = max(0, 12 - abs(self.cycle % 80 - 40) // 2)
        return {"queue": Demand(idle_jobs=idle)}


def play(rng: random.Random, cloud: FakeConnector, store: Store, clock: FakeClock) -> None:
    """The pilots and the cloud between two cycles."""
    for machine in cloud.ours():
        roll = rng.random()
        if machine.status is CloudStatus.RUNNING:
            store.put_heartbeats([("sim", Heartbeat(machine.name, clock()))])
            if roll < 0.04:
                message = rng.choice(["200 Success", "300 No matching jobs", "500 Pilot failed"])
                store.put_heartbeats([("sim", Heartbeat(machine.name, clock(), message, clock()))])
                cloud.set_status(machine.name, CloudStatus.STOPPED, "SHUTOFF")
            elif roll < 0.05:
                cloud.set_status(machine.name, CloudStatus.FAILED, "ERROR")
        if roll > 0.995:
            cloud.vanish(machine.name)
    failures = [("create", QuotaExceeded("quota")), ("create", LaunchRejected("bad image")),
                ("create", CloudUnavailable("timeout")), ("delete", CloudUnavailable("503")),
                ("list", CloudUnavailable("keystone down"))]
    if rng.random() < 0.15:
        op, error = rng.choice(failures)
        cloud.inject(op, error)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_hundred_cycles_keep_every_invariant(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = load_text(CONFIG)
    clock = FakeClock()
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    cloud = FakeConnector(clock=clock, boot_seconds=90, quota_processors=36)
    cloud.add_foreign("someone-elses-vm", processors=4)
    demand = ScriptedDemand(rng)
    ctx = SpaceContext(config, config.spaces["sim"], cloud, store, {"batch": demand},
                       lambda *args: b"#!/bin/sh\n", clock)
    space = config.spaces["sim"]
    creates = deletes = 0
    for cycle in range(300):
        demand.cycle = cycle
        report = run_cycle(ctx)
        creates += report.counts.get("creates", 0)
        deletes += report.counts.get("deletes", 0)
        listed = cloud.ours()
        # limits: the whole space, each machinetype
        total = sum(m.processors or 1 for m in cloud.list_machines())
        assert total <= space.processors_limit, (cycle, total)
        for name, mt in space.machinetypes.items():
            mine = sum(m.processors or 1 for m in listed if m.owner and m.owner.machinetype == name)
            if mt.processors_limit is not None:
                assert mine <= mt.processors_limit, (cycle, name, mine)
        # no leak: every tagged machine in the cloud is known and live in the store
        live = {r.name for r in store.load("sim").records if r.state is not MachineState.GONE}
        assert {m.name for m in listed} <= live, cycle
        # nothing foreign is ever touched
        assert "someone-elses-vm" in cloud.machines
        play(rng, cloud, store, clock)
        clock.advance(60)
    deleted_ids = {arg for op, arg in cloud.calls if op == "delete"}
    assert not any(i.startswith("foreign-") for i in deleted_ids)
    assert creates > 50 and deletes > 20  # the simulation did real work
    histories = [store.history("sim", r.name) for r in store.load("sim").records]
    assert all(h and (h[0].state is MachineState.REQUESTED or h[0].reason.startswith("adopted")) for h in histories)
    store.close()
