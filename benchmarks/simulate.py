"""How fast `vcycle simulate` runs a week: 10,000 jobs over 5 spaces and 500 machines, and whether the same seed
gives the same report byte for byte.

    .venv/bin/python benchmarks/simulate.py [--rounds 3] [--days 7] [--jobs 10000] [--cycle-seconds 60]

Each round builds the trace from a seeded generator (arrivals over the week in daily waves, 1 to 8 hours each,
one core), runs the real cycle of every space on the simulated clouds, one every --cycle-seconds of simulated
time (60 by default, vcycle's own default cycle_seconds: a week is 10,081 cycles of each space, each a real one
with its store; 300 makes it 2,017), and times it (wall and CPU). The last line:
RESULT sim_week_10k_jobs_s=... jobs_per_s=... deterministic=1 (median of the rounds).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vcycle.config.load import load_config
from vcycle.sim import clouds, report, run
from vcycle.sim.trace import Job

SPACES = 5
PROCESSORS = 100  # each space: 100 one-processor machines at most, 500 in all


def config_text(directory: str, cycle_seconds: int) -> str:
    lines = ["[settings]", "manager_name = bench", f"state_dir = {directory}", f"cycle_seconds = {cycle_seconds}",
             "max_create_fraction = 0.25", "", "[demand queue]", "type = file", f"path = {directory}/none.json", ""]
    for n in range(SPACES):
        lines += [f"[space site{n}]", "api = local", f"processors_limit = {PROCESSORS}", "",
                  f"[machinetype site{n} pilot]", "demand = queue", "user_data = pilot-container",
                  f"target_share = {1 + n % 2}", "backoff_seconds = 600", "fizzle_seconds = 0",
                  "max_wallclock_seconds = 172800", "price_per_hour = 0.05", ""]
    return "\n".join(lines)


def trace(jobs: int, days: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    found = []
    for n in range(jobs):
        day = rng.randrange(days)
        hour = min(23.99, max(0.0, rng.gauss(12, 4)))  # a wave each day
        found.append(Job(f"job-{n:05d}", day * 86400 + hour * 3600, 1, 2000, rng.uniform(3600, 8 * 3600), "pilot"))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--cycle-seconds", type=int, default=60, help="the simulated configuration's cycle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.conf")
        Path(path).write_text(config_text(directory, args.cycle_seconds))
        config = load_config([path], hostname="bench")
        specs = clouds.load(None, sorted(config.spaces))
        jobs = trace(args.jobs, args.days, 1)
        walls, cpus, outputs = [], [], []
        for n in range(args.rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            result = run.simulate(config, specs, jobs, seed=7, until=args.days * 86400.0)
            text = report.to_json(report.summary(result))
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            outputs.append(text)
            s = report.summary(result)
            print(f"round {n + 1}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU for {result.steps} cycles x "
                  f"{SPACES} spaces; {sum(r['finished'] for r in s['machinetypes'].values())} of {len(jobs)} jobs "
                  f"finished, efficiency {s['core_hours']['efficiency']}", flush=True)
    wall = statistics.median(walls)
    same = int(len(set(outputs)) == 1)
    print(f"RESULT sim_week_10k_jobs_s={wall:.1f} jobs_per_s={math.floor(len(jobs) / wall)} deterministic={same} "
          f"cpu_s={statistics.median(cpus):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
