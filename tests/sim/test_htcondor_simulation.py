"""Many cycles of a space fed by HTCondor demand: jobs arrive in waves, wait, run on vcycle's machines and
finish; the machines stop when their startd has had nothing to do.

The pool is tests/fakecondor.py (classad2 ads and constraints; no HTCondor daemon can run here) reached
through the code's own BindingsPool; FakeConnector, a real SQLite store and FakeClock do the rest. Checked
every cycle: held jobs, jobs idle for less than min_idle_seconds and a job bigger than any machine never make
a machine; vcycle never has more machines booting than the idle jobs fill; every job that fits is run.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import classad2
from fakecondor import FakeHTCondor, FakePool
from vctest import load_text

from vcycle.cycle import SpaceContext, run_cycle
from vcycle.demand import make_source
from vcycle.demand.htcondor import BindingsPool
from vcycle.model import CloudStatus, Heartbeat
from vcycle.states import MachineState
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

CONFIG = """
[settings]
manager_name = sim
max_create_fraction = 0.5

[demand pool]
type = htcondor
collector = cm.example.org
min_idle_seconds = 120

[space sim]
api = fake
processors_limit = 64

[machinetype sim atlas]
user_data = ud
target_share = 1
min_processors = 4
mb_per_processor = 2000
backoff_seconds = 0
fizzle_seconds = 0
demand = pool
htcondor_constraint = x509UserProxyVOName == "atlas"
"""

CORES, MEMORY = 4, 8000


def job(cluster: int, proc: int, cores: int, memory: int, now: int, status: int = 1) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    for key, value in (("ClusterId", cluster), ("ProcId", proc), ("JobStatus", status), ("QDate", now),
                       ("EnteredCurrentStatus", now), ("RequestCpus", cores), ("RequestMemory", memory),
                       ("RequestDisk", 1000), ("x509UserProxyVOName", "atlas")):
        ad[key] = value
    return ad


Running = dict[tuple[int, int], tuple[str, int]]  # job -> (machine, finishes at)


def play_pool(rng: random.Random, cloud: FakeConnector, store: Store, clock: FakeClock, jobs: list[classad2.ClassAd],
              running: Running, idle_since: dict[str, int]) -> int:
    """The pool between two cycles: running machines take idle jobs that fit, jobs finish, machines whose
    startd had nothing to do for 5 minutes stop (as the htcondor-startd template does). Jobs finished."""
    now = int(clock().timestamp())
    waiting = [a for a in jobs if a["JobStatus"] == 1 and a["RequestCpus"] <= CORES]
    for machine in cloud.ours():
        if machine.status is not CloudStatus.RUNNING:
            continue
        mine = [key for key, (name, _) in running.items() if name == machine.name]
        free = CORES - sum(a["RequestCpus"] for a in jobs if (a["ClusterId"], a["ProcId"]) in mine)
        for ad in waiting:
            if ad["JobStatus"] == 1 and ad["RequestCpus"] <= free:
                ad["JobStatus"], ad["EnteredCurrentStatus"] = 2, now
                running[(ad["ClusterId"], ad["ProcId"])] = (machine.name, now + rng.randint(300, 1500))
                free -= ad["RequestCpus"]
        if free < CORES:
            idle_since.pop(machine.name, None)
        elif now - idle_since.setdefault(machine.name, now) >= 300:
            store.put_heartbeats([("sim", Heartbeat(machine.name, clock(), "300 No more work", clock()))])
            cloud.set_status(machine.name, CloudStatus.STOPPED, "SHUTOFF")
    finished = 0
    for key, (_, finish) in list(running.items()):
        if finish <= now:
            del running[key]
            jobs[:] = [a for a in jobs if (a["ClusterId"], a["ProcId"]) != key]
            finished += 1
    return finished


def test_demand_driven_machines_over_four_hundred_cycles(tmp_path: Path) -> None:
    rng = random.Random(7)
    clock = FakeClock()
    config = load_text(CONFIG)
    pool = FakePool({"s1": []})
    jobs = pool.schedds["s1"]
    stamp = lambda: int(clock().timestamp())  # noqa: E731
    jobs.append(job(1, 0, 64, 1000, stamp()))  # never fits a 4-core machine: reported, never a machine
    jobs.append(job(2, 0, 1, 1000, stamp(), status=5))  # held: never counted
    source = make_source(config.demands["pool"], config.spaces)
    source.pool, source.clock = BindingsPool(None, module=FakeHTCondor(pool)), clock  # type: ignore[attr-defined]
    cloud = FakeConnector(clock=clock, boot_seconds=120)
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    ctx = SpaceContext(config, config.spaces["sim"], cloud, store, {"pool": source}, lambda *a: b"#!/bin/sh\n",
                       clock)
    running: Running = {}
    idle_since: dict[str, int] = {}
    cluster, ran, creates = 10, 0, 0
    for cycle in range(400):
        if cycle % 100 == 5:  # a wave: one-core jobs and four-core jobs
            cluster += 1
            for proc in range(rng.randint(20, 40)):
                cores = 4 if rng.random() < 0.25 else 1
                jobs.append(job(cluster, proc, cores, 2000 * cores, stamp()))
        before = {m.name for m in cloud.ours()}
        report = run_cycle(ctx)
        assert report.ok, report.errors
        creates += report.counts["creates"]
        made = [m for m in cloud.ours() if m.name not in before]
        now = stamp()
        waiting = [a for a in jobs if a["JobStatus"] == 1 and a["RequestCpus"] <= CORES]
        ready = [a for a in waiting if now - a["EnteredCurrentStatus"] >= 120]
        if made:  # each new machine is wanted: the ready jobs need at least as many as are booting
            booting = [m for m in cloud.ours() if m.status is CloudStatus.STARTING]
            cores_needed = sum(a["RequestCpus"] for a in ready)
            one_shape_at_a_time = sum(math.ceil(sum(1 for a in ready if a["RequestCpus"] == c) / (CORES // c))
                                      for c in (1, 4))
            assert math.ceil(cores_needed / CORES) <= one_shape_at_a_time
            assert len(booting) <= one_shape_at_a_time, (cycle, len(booting), one_shape_at_a_time)
        ran += play_pool(rng, cloud, store, clock, jobs, running, idle_since)
        clock.advance(60)
    assert ran > 0 and not running
    left = sorted((a["ClusterId"], a["JobStatus"]) for a in jobs)
    assert left == [(1, 1), (2, 5)]  # every job that fits ran; the giant and the held job are still there
    assert [m for m in cloud.ours() if m.status is not CloudStatus.STOPPED] == []
    assert [r.name for r in store.load("sim").records if r.state is not MachineState.GONE] == []
    assert 0 < creates < ran  # machines ran several jobs each (138 jobs on 64 machines with seed 7)
    last = store.last_reports()["sim"]
    assert any("1 idle jobs ask for more than one 4-processor machine" in d["reason"] for d in last["decisions"])
    store.close()
