"""One cycle over 100 spaces of 500 machines each, every cloud call taking 100 ms.

Each space is a FakeConnector with 100 ms of latency per API call and a
store (SQLite, WAL) already holding its 500 machines; in every space a few
machines have stopped (to be deleted) and there is room for a few more (to
be created). The floor is the slowest space's chain of calls: list, quota,
then its creates and deletes in rounds of ``create_workers``. The script
times several steady-state cycles of the daemon's own code path
(Manager.cycle), prints the median next to the floor, and the resident
memory of the daemon's processes (parent and workers) holding all 50,000 machines, and the CPU time one
steady cycle costs (this process and its workers). Then the same cycles again with the machine's other core
kept busy by a spinning child of this script (``busy_floor_ratio``; ``--no-busy`` leaves that out).

    .venv/bin/python benchmarks/cycle.py [--spaces 100] [--machines 500] [--cycles 5] [--no-busy] [--churn-every 3]

``--churn-every 0`` measures a space in which nothing changes. Ends with ``RESULT floor_ratio=... rss_mb=...
cpu_ms_per_cycle=... cpu_us_per_machine=... records_looked=... busy_floor_ratio=... idle_cpu_ratio=...``
(records_looked: the median number of records the steady cycles' syncs looked at, over all spaces;
idle_cpu_ratio: how much more CPU this machine charges for a fixed piece of work done right after sleeping
as long as a cloud call takes than for the same work done back to back; the cycle's CPU includes that charge).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from vcycle.config import load_config
from vcycle.core.model import CloudMachine, OwnerTags, StatusChange
from vcycle.core.model import MachineRecord as Record
from vcycle.core.sections import SpaceConfig
from vcycle.core.states import MachineState
from vcycle.loop.daemon import Manager
from vcycle.store import Store
from vcycle.testing import FakeConnector, FakeMachine

LATENCY = float(os.environ.get("BENCH_LATENCY", "0.1"))
STOPPED_PER_SPACE = 1
CHURN_EVERY = int(os.environ.get("BENCH_CHURN_EVERY", "3"))  # --churn-every; 0: no machine ever finishes
ROOM_PER_SPACE = STOPPED_PER_SPACE


def write_config(directory: str, spaces: int, machines: int, workers: int, processes: int) -> str:
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", f"space_workers = {workers}", f"space_processes = {processes}",
             "create_workers = " + os.environ.get("BENCH_CREATE_WORKERS", "8")]
    for s in range(spaces):
        lines += [f"[space bench{s:03d}]", "api = fake", f"latency_seconds = {LATENCY}",
                  f"processors_limit = {machines + ROOM_PER_SPACE}",
                  f"[machinetype bench{s:03d} pilot]", "user_data = pilot-container", "target_share = 1",
                  "backoff_seconds = 600", "fizzle_seconds = 600", "max_wallclock_seconds = 172800"]
    path = os.path.join(directory, "bench.conf")
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    return path


class ChurningCloud(FakeConnector):
    """A fake cloud in which, every CHURN_EVERY listings, a running machine finishes.

    500 machines living about a day finish at about one every three minutes:
    with the default CHURN_EVERY = 3 each space deletes and replaces one
    machine every third cycle, the spaces taking turns.
    """

    def __init__(self, offset: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listings = offset

    def list_machines(self) -> list[CloudMachine]:
        self.listings += 1
        if CHURN_EVERY and self.listings % CHURN_EVERY == 0:
            running = [m for m in self.machines.values() if m.state == "running" and m.owner is not None]
            for machine in running[:STOPPED_PER_SPACE]:
                machine.state = "halted"
        return super().list_machines()


def populate(store: Store, space: SpaceConfig, machines: int, now: datetime, offset: int) -> FakeConnector:
    cloud = ChurningCloud(offset, latency_seconds=LATENCY)
    records = []
    for i in range(machines):
        name = f"vcycle-pilot-{space.name}-{i:05d}"
        created = now - timedelta(seconds=3600 + i)
        state = MachineState.RUNNING
        records.append(Record(name=name, space=space.name, machinetype="pilot", state=state, processors=1,
                              created_at=created, request_id=f"r{i}", manager="bench", cloud_id=f"id-{name}",
                              started_at=created, shutdown_at=created + timedelta(days=2),
                              last=StatusChange(state, created, "bench")))
        cloud.machines[name] = FakeMachine(f"id-{name}", name, 1, created, "running",
                                           OwnerTags(space.name, "pilot", "bench", f"r{i}"))
    store.write(space.name, store.load(space.name).version, records)
    return cloud


def spin() -> None:
    """Keep one core busy (the --busy phase's other load)."""
    while True:
        pass


def work() -> int:
    """A fixed piece of pure Python (about a third of a millisecond here): dicts, strings and a sum."""
    table = {i: str(i) for i in range(2000)}
    return sum(map(len, table.values()))


def idle_cpu_ratio(gap: float, rounds: int = 20) -> float:
    """The CPU time ``work`` takes right after ``gap`` seconds asleep, over the CPU time it takes run back to
    back (median of 3): what this machine charges for waking from idle, as a cycle's code does each time its
    cloud calls come back. 1.0 on a machine that charges nothing; the cycle's CPU figures include it."""
    def spent(pause: float) -> float:
        total = 0.0
        for _ in range(rounds):
            if pause:
                time.sleep(pause)
            started = time.thread_time()
            work()
            total += time.thread_time() - started
        return total

    spent(0)  # warm
    return statistics.median(spent(gap) / spent(0) for _ in range(3))


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of ``pids`` so far."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, in MB."""
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    global CHURN_EVERY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", type=int, default=100)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--space-workers", type=int, default=100)
    parser.add_argument("--space-processes", type=int, default=1)
    parser.add_argument("--no-busy", action="store_true", help="leave out the cycles with the other core busy")
    parser.add_argument("--churn-every", type=int, default=CHURN_EVERY,
                        help="a machine of each space finishes every N cycles (0: none; a space that never changes)")
    args = parser.parse_args()
    CHURN_EVERY = args.churn_every
    with tempfile.TemporaryDirectory() as directory:
        config = load_config([write_config(directory, args.spaces, args.machines, args.space_workers,
                                           args.space_processes)], hostname="bench")
        store = Store.open(config.settings.state_url)
        now = datetime.now(UTC)
        clouds: dict[str, FakeConnector] = {}
        order = {name: i for i, name in enumerate(config.spaces)}

        def factory(space: SpaceConfig, cfg: object) -> FakeConnector:
            """Each space's cloud and records, made in the process that cycles it (a worker, or this one)."""
            if space.name not in clouds:
                local = Store.open(config.settings.state_url)
                clouds[space.name] = populate(local, space, args.machines, now, order[space.name])
                local.close()
            return clouds[space.name]

        manager = Manager(config, store, connector_factory=factory)
        # the floor: list + quota, then creates and deletes in rounds of create_workers
        rounds = math.ceil((STOPPED_PER_SPACE + ROOM_PER_SPACE) / config.settings.create_workers)
        floor = (2 + rounds) * LATENCY
        times: list[float] = []
        cpus: list[float] = []
        busy: list[float] = []
        looked: list[int] = []  # records the steady cycles' syncs looked at (core/delta.py)

        def run(cycle: int, kept: list[float], label: str) -> None:
            workers = [w[0].pid for w in (manager.shards.workers if manager.shards else []) if w is not None]
            spent = cpu_seconds([p for p in workers if p is not None])
            started = time.perf_counter()
            reports = manager.cycle()
            elapsed = time.perf_counter() - started
            spent = cpu_seconds([p for p in workers if p is not None]) - spent
            if cycle > 1:  # the first cycles set up the spaces and read every row once; then the steady state
                kept.append(elapsed)
                if kept is times:
                    cpus.append(spent)
                    looked.append(sum(r.counts.get("synced_records", 0) for r in reports))
            failed = [r for r in reports if not r.ok]
            if failed:
                print("errors:", failed[0].errors)
            print(f"{label}cycle {cycle}: {elapsed:.2f} s, {spent * 1000:.0f} ms CPU, "
                  f"{sum(r.counts.get('creates', 0) for r in reports)} creates, "
                  f"{sum(r.counts.get('deletes', 0) for r in reports)} deletes, {len(failed)} failed spaces")

        for cycle in range(args.cycles + 2):
            run(cycle, times, "")
        if not args.no_busy:
            spinner = multiprocessing.get_context("fork").Process(target=spin, daemon=True)
            spinner.start()
            try:
                for cycle in range(2, args.cycles + 2):
                    run(cycle, busy, "busy ")
            finally:
                spinner.terminate()
                spinner.join()
        total = sum(len(store.load(name).records) for name in config.spaces)
        workers = [w[0].pid for w in (manager.shards.workers if manager.shards else []) if w is not None]
        memory = rss_mb() + sum(rss_mb(pid) for pid in workers if pid is not None)
        manager.close()
        store.close()
    median = statistics.median(times)
    cpu = statistics.median(cpus)
    idle = idle_cpu_ratio(LATENCY)
    print(f"spaces={args.spaces} machines={total} latency={LATENCY * 1000:.0f}ms space_workers={args.space_workers} "
          f"space_processes={args.space_processes} churn: one machine per space every {CHURN_EVERY} cycle(s)")
    print(f"steady cycle: median {median:.3f} s (min {min(times):.3f} s), {cpu * 1000:.0f} ms CPU; floor {floor:.3f} s"
          + (f"; with the other core busy: median {statistics.median(busy):.3f} s" if busy else ""))
    print(f"records looked at by the steady cycles' syncs: {looked} (full passes every full_sync_cycles look at all)")
    print(f"this machine charges {idle:.2f}x the CPU for a piece of work done right after {LATENCY * 1000:.0f} ms "
          "asleep, as a cycle's code is each time its calls return (idle_cpu_ratio; 1.00: no charge)")
    line = (f"RESULT floor_ratio={median / floor:.2f} rss_mb={memory:.0f} cpu_ms_per_cycle={cpu * 1000:.0f} "
            f"cpu_us_per_machine={cpu * 1e6 / max(1, total):.2f} records_looked={statistics.median(looked):.0f}")
    if busy:
        line += f" busy_floor_ratio={statistics.median(busy) / floor:.2f}"
    print(line + f" idle_cpu_ratio={idle:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
