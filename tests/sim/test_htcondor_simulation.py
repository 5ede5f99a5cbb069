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

from vcycle.core.model import CloudStatus, Heartbeat
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.demand import make_source
from vcycle.demand.htcondor import BindingsPool
from vcycle.loop.cycle import SpaceContext, run_cycle
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
# this pool has no startds, so no machine ever registers (the retirement test below plays them)
register_timeout_seconds = 0
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


def space(config: Config, pool: FakePool, clock: FakeClock, tmp_path: Path) -> tuple[SpaceContext, FakeConnector,
                                                                                      Store]:
    """The space 'sim' fed by the pool through the code's own BindingsPool, on the fake cloud and a real store."""
    source = make_source(config.demands["pool"], config.spaces)
    source.pool, source.clock = BindingsPool(None, module=FakeHTCondor(pool)), clock  # type: ignore[attr-defined]
    cloud = FakeConnector(clock=clock, boot_seconds=120)
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    return (SpaceContext(config, config.spaces["sim"], cloud, store, {"pool": source}, lambda *a: b"#!/bin/sh\n",
                         clock), cloud, store)


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
    ctx, cloud, store = space(config, pool, clock, tmp_path)
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


RETIRE = CONFIG.replace("backoff_seconds = 0", "backoff_seconds = 600").replace(
    "register_timeout_seconds = 0\n", "") + \
    """retire_idle_seconds = 300
retire_timeout_seconds = 1200
register_timeout_seconds = 600
"""


class Startds:
    """The machines' side of the pool: startds join (one in eight never does), take jobs, and leave when
    drained and done."""

    def __init__(self, rng: random.Random, pool: FakePool) -> None:
        self.rng, self.pool, self.jobs = rng, pool, pool.schedds["s1"]
        self.running: Running = {}
        self.broken: set[str] = set()
        self.healthy: set[str] = set()
        self.drained: dict[str, int] = {}  # machine -> the cycle its drain arrived

    def busy(self) -> set[str]:
        return {name for name, _ in self.running.values()}

    def play(self, cloud: FakeConnector, now: int) -> int:
        """One minute of the pool; the jobs finished."""
        from fakecondor import startd

        for machine in cloud.ours():
            if machine.status is not CloudStatus.RUNNING or machine.name in self.broken:
                continue
            if machine.name not in self.healthy:
                (self.healthy if self.rng.random() > 0.125 else self.broken).add(machine.name)
                continue
            mine = [k for k, (name, _) in self.running.items() if name == machine.name]
            self.pool.startds[:] = [s for s in self.pool.startds if s["VCYCLE_MACHINE"] != machine.name]
            if machine.name in self.drained and not mine:
                continue  # a peaceful drain ends: the startd has left the pool
            for ad in self.jobs:
                if machine.name not in self.drained and ad["JobStatus"] == 1 and len(mine) < CORES:
                    ad["JobStatus"], ad["EnteredCurrentStatus"] = 2, now
                    self.running[(ad["ClusterId"], ad["ProcId"])] = (machine.name, now + self.rng.randint(300, 1500))
                    mine.append((ad["ClusterId"], ad["ProcId"]))
            self.pool.startds.append(startd(machine.name, "sim", "Claimed" if mine else "Unclaimed"))
        finished = 0
        for key, (_, finish) in list(self.running.items()):
            if finish <= now:
                del self.running[key]
                self.jobs[:] = [a for a in self.jobs if (a["ClusterId"], a["ProcId"]) != key]
                finished += 1
        return finished


def test_idle_machines_are_retired_and_broken_ones_deleted_over_six_hundred_cycles(tmp_path: Path) -> None:
    """The machines' startds join the pool (one in eight never does), take jobs, and leave when drained; vcycle
    drains idle machines it does not need, deletes drained ones, and deletes the broken ones as aborts."""
    rng = random.Random(11)
    clock = FakeClock()
    config = load_text(RETIRE)
    pool = FakePool({"s1": []}, [])
    jobs = pool.schedds["s1"]
    ctx, cloud, store = space(config, pool, clock, tmp_path)
    machines = Startds(rng, pool)
    cluster, ran, aborts, backed_off, deleted = 10, 0, 0, False, 0
    for cycle in range(600):
        if cycle % 150 == 5:
            cluster += 1
            for proc in range(rng.randint(20, 40)):
                jobs.append(job(cluster, proc, 1, 2000, int(clock().timestamp())))
        busy_before = machines.busy()
        sent = len(pool.commands)
        report = run_cycle(ctx)
        for op, machine_id in cloud.calls:  # ids are fake-NNNNNN-NAME
            if op == "delete":
                assert machine_id.split("-", 2)[2] not in busy_before, f"cycle {cycle}: {machine_id} deleted busy"
                deleted += 1
        cloud.calls.clear()
        for master, command in pool.commands[sent:]:  # drains reach idle machines only
            name = master.removesuffix(".example.org")
            assert command == "DaemonsOffPeaceful" and name not in busy_before, (cycle, name)
            machines.drained.setdefault(name, cycle)
        aborts += sum(1 for d in report.decisions if d.action.value == "delete" and "has not registered" in d.reason)
        backoff = store.load("sim").backoffs.get("atlas")
        backed_off |= backoff is not None and "500 Batch daemon did not register" in backoff.reason
        ran += machines.play(cloud, int(clock().timestamp()))
        clock.advance(60)
    assert ran > 0 and not machines.running and jobs == []  # every job ran
    assert machines.broken and aborts == len(machines.broken)  # each that never joined: deleted as an abort
    assert machines.drained  # idle machines were retired through drains
    assert [m.name for m in cloud.ours()] == []  # and deleted once their startds left
    assert backed_off  # and the machinetype backed off after them
    assert deleted == len(machines.broken) + len(machines.drained)
    store.close()
