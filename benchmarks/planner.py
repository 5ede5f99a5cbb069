"""The planner's cost per machine: 50,000 machines in 200 machinetypes across 100 spaces.

Each space holds 500 machines of two machinetypes in a realistic mix of
states (mostly running, some starting, stopped, failed and deleting, a few
past their wallclock or missing heartbeats), with one machinetype driven by
demand. One "cycle" plans every space once. Prints the median of several
cycles and ends with ``RESULT us_per_machine=... sync_us_per_machine=...``.

    .venv/bin/python benchmarks/planner.py [--cycles N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from vcycle.config import load_config
from vcycle.core.model import CloudMachine, CloudStatus, Demand, MachineRecord, OwnerTags, SpaceSnapshot, StatusChange
from vcycle.core.planner import plan
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.core.sync import sync

SPACES, MACHINETYPES_PER_SPACE, MACHINES_PER_SPACE = 100, 2, 500
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
S = MachineState
MIX = [S.RUNNING] * 80 + [S.STARTING] * 8 + [S.REQUESTED] * 2 + [S.STOPPED] * 4 + [S.FAILED] * 2 + \
      [S.DELETING] * 2 + [S.DELETE_FAILED] + [S.DRAINING]
CLOUD = {S.RUNNING: CloudStatus.RUNNING, S.STARTING: CloudStatus.STARTING, S.STOPPED: CloudStatus.STOPPED,
         S.FAILED: CloudStatus.FAILED, S.DELETING: CloudStatus.DELETING, S.DELETE_FAILED: CloudStatus.RUNNING,
         S.DRAINING: CloudStatus.RUNNING}


def write_config(directory: str) -> Config:
    lines = ["[settings]", "manager_name = bench", "[demand q]", "type = file", "path = /dev/null"]
    for s in range(SPACES):
        lines += [f"[space space{s:03d}]", "api = fake", f"processors_limit = {MACHINES_PER_SPACE * 2 + 40}"]
        for m in range(MACHINETYPES_PER_SPACE):
            lines += [f"[machinetype space{s:03d} mt{m}]", "user_data = ud", f"target_share = {m + 1}",
                      "backoff_seconds = 600", "fizzle_seconds = 600", "hs06_per_processor = 10",
                      "heartbeat_file = hb", "heartbeat_seconds = 900", "flavor_names = small large",
                      "min_processors = 2", "max_processors = 2"]
            if m == 1:
                lines += ["demand = q", "jobs_per_machine = 2"]
    path = os.path.join(directory, "bench.conf")
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    return load_config([path], hostname="bench")


def make_records(space: str) -> list[MachineRecord]:
    records = []
    for i in range(MACHINES_PER_SPACE):
        state = MIX[i % len(MIX)]
        young = state in (S.REQUESTED, S.STARTING)
        age = timedelta(seconds=(i * 7) % 1800 if young else 600 + (i * 97) % 86_000)
        created = NOW - age
        records.append(MachineRecord(
            name=f"{space}-m{i:04d}", space=space, machinetype=f"mt{i % MACHINETYPES_PER_SPACE}", state=state,
            processors=2, created_at=created, request_id=f"r{i}", manager="bench", cloud_id=f"id{i}", hs06=20.0,
            started_at=created + timedelta(seconds=60), shutdown_at=created + timedelta(seconds=86_400),
            heartbeat_at=NOW - timedelta(seconds=(i * 13) % 800),
            last=StatusChange(state, created, "bench")))
    return records


def make_cloud(records: list[MachineRecord]) -> list[CloudMachine]:
    return [CloudMachine(r.cloud_id or "", r.name, CLOUD.get(r.state, CloudStatus.STARTING),
                         OwnerTags(r.space, r.machinetype, "bench", r.request_id), 2, r.created_at)
            for r in records if r.state is not S.REQUESTED]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = write_config(directory)
    spaces = sorted(config.spaces)
    snapshots = []
    observed = []
    for name in spaces:
        records = make_records(name)
        snapshots.append(SpaceSnapshot(name, tuple(records), foreign_processors=10,
                                       flavors={"small": 2, "large": 8}))
        observed.append((records, make_cloud(records)))
    demand = {"mt1": Demand(idle_jobs=40, running_jobs=100)}
    machines = SPACES * MACHINES_PER_SPACE

    plan_times, sync_times = [], []
    decisions = creates = deletes = 0
    for _ in range(args.cycles):
        start = time.perf_counter()
        for snapshot in snapshots:
            result = plan(snapshot, demand, config, NOW)
        plan_times.append(time.perf_counter() - start)
        decisions, creates, deletes = len(result.decisions), len(result.creates), len(result.deletes)
        start = time.perf_counter()
        for name, (records, listing) in zip(spaces, observed, strict=True):
            sync(records, listing, {}, NOW, space=config.spaces[name], settings=config.settings)
        sync_times.append(time.perf_counter() - start)

    us_plan = statistics.median(plan_times) / machines * 1e6
    us_sync = statistics.median(sync_times) / machines * 1e6
    print(f"machines={machines} spaces={SPACES} machinetypes={SPACES * MACHINETYPES_PER_SPACE} cycles={args.cycles}")
    print(f"last space: {creates} creates, {deletes} deletes, {decisions} decisions")
    print(f"plan: median {statistics.median(plan_times) * 1000:.1f} ms per cycle over all spaces "
          f"(min {min(plan_times) * 1000:.1f} ms)")
    print(f"sync: median {statistics.median(sync_times) * 1000:.1f} ms per cycle over all spaces")
    print(f"python {sys.version.split()[0]}")
    print(f"RESULT us_per_machine={us_plan:.3f} sync_us_per_machine={us_sync:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
