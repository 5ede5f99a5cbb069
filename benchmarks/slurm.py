"""Slurm demand: how soon a job submitted with sbatch becomes a create, and what reading 1,000 pending jobs costs.

The cluster is the project's Slurm testbed (scripts/slurm_testbed.py: munged, slurmctld and slurmds from
Debian's packages, on this machine). The delay: ``vcycle daemon`` runs with a ``type = slurm`` source watched
every 0.5 s (``poll_seconds``) and cycles otherwise every 10 minutes, on the fake cloud; each round submits one
job to the partition of vcycle's machines and times from sbatch's return to the machine's record in the
store (written just before the create call); the rounds are a seeded random 1-1.5 s apart, so that they do not
fall in step with the watch's looks. The cost: with 1,000 separate pending jobs queued (sbatch in a
loop), the source's ``demand()`` (``squeue --json``, parsed, filtered, shaped), timed several times.

    .venv/bin/python benchmarks/slurm.py [--rounds 9] [--jobs 1000]

Ends with ``RESULT pending_to_create_s=... squeue_1000_jobs_s=...`` (medians).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import slurm_testbed  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.demand import make_source  # noqa: E402


def write(directory: Path, testbed: slurm_testbed.Testbed) -> Path:
    conf = directory / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{directory}/state.db
state_dir = {directory}
manager_name = bench
cycle_seconds = 600
max_create_fraction = 1

[space bench]
api = fake
processors_limit = 1000

[demand cluster]
type = slurm
slurm_conf = {testbed.conf}
partitions = dyn
poll_seconds = 0.5

[machinetype bench worker]
demand = cluster
user_data = slurm-worker
user_data_option_slurm_conf_server = {testbed.controller}
min_processors = 1
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
max_wallclock_seconds = 259200
""")
    return conf


def records(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            return int(connection.execute("SELECT count(*) FROM machines").fetchone()[0])
    except sqlite3.Error:
        return 0


def delays(testbed: slurm_testbed.Testbed, rounds: int) -> list[float]:
    found = []
    with tempfile.TemporaryDirectory(prefix="vcycle-bench-slurm-") as name:
        directory = Path(name)
        conf = write(directory, testbed)
        daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(conf)],
                                  stdout=subprocess.DEVNULL, stderr=open(directory / "daemon.log", "w"))
        try:
            deadline = time.monotonic() + 60
            while not (directory / "state.db").exists() or "cycle" not in (directory / "daemon.log").read_text():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"the daemon did not start:\n{(directory / 'daemon.log').read_text()[-2000:]}")
                time.sleep(0.1)
            time.sleep(1.5)  # the watch's first look is taken: later ones see the rise
            chance = random.Random(21)
            for _ in range(rounds):
                before = records(directory / "state.db")
                testbed.sbatch("-p", "dyn", "-c", "1", "-t", "60")
                started = time.perf_counter()
                while records(directory / "state.db") <= before:
                    if time.perf_counter() - started > 60:
                        raise SystemExit("no create within 60 s of sbatch")
                    time.sleep(0.01)
                found.append(time.perf_counter() - started)
                print(f"  sbatch -> create: {found[-1]:.2f} s", flush=True)
                time.sleep(chance.uniform(1.0, 1.5))  # not in step with the watch's looks
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    return found


def reading(testbed: slurm_testbed.Testbed, jobs: int, rounds: int) -> list[float]:
    started = time.perf_counter()
    for _ in range(jobs):
        testbed.sbatch("-p", "dyn", "-c", "1", "-t", "60")
    print(f"  {jobs} jobs submitted in {time.perf_counter() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as name:
        config = load_config([write(Path(name), testbed)])
        source = make_source(config.demands["cluster"], config.spaces)
        timed = []
        for _ in range(rounds):
            started = time.perf_counter()
            demand = source.demand("bench")["worker"]
            timed.append(time.perf_counter() - started)
        if demand.idle_jobs < jobs:
            raise SystemExit(f"the source counted {demand.idle_jobs} of {jobs} pending jobs")
    print(f"  demand() with {jobs} pending jobs: " + ", ".join(f"{t:.3f}" for t in timed) + " s", flush=True)
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    reason = slurm_testbed.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot start the Slurm testbed: {reason}")
    testbed = slurm_testbed.start()
    try:
        delay = statistics.median(delays(testbed, args.rounds))
        testbed.clear()
        cost = statistics.median(reading(testbed, args.jobs, args.rounds))
    finally:
        testbed.stop()
    print(f"RESULT pending_to_create_s={delay:.2f} squeue_{args.jobs}_jobs_s={cost:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
