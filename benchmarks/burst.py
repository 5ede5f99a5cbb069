"""A burst of idle jobs, and an offering without capacity.

Burst: a real ``vcycle daemon`` (a process; cycle_seconds 300, so only its watch can react in time) with an EC2
space on a moto server of its own (``moto_server``, started here) and a ``type = file`` demand with
``poll_seconds = 0.5``. Once the daemon has cycled on no demand, the file is replaced by one of ``--jobs`` idle
jobs (one machine each); the figure is the wall time from that write to the store showing every one of their
create calls answered by the cloud (each machine STARTING), so every call was issued within it. moto runs
without its 1,300 default AMIs (it scans them on every RunInstances; the one image is registered). Each round
also measures the floor: the same number of bare RunInstances (boto3 alone, from as many threads as
create_workers, vcycle's tags and size of user-data) on a fresh moto, which no manager can beat here;
``floor_ratio`` is the burst over it, taken in the same round.

Failing offering: real cycles over FakeConnector on a FakeClock with a real SQLite store, one a simulated
minute for an hour; the machinetype's first flavor has no capacity at all (NoCapacity, as EC2's
InsufficientInstanceCapacity), its second has room. ``failing_offering_calls`` is the most create calls that
reached the full flavor in one offering_cooldown_seconds window (180 s); ``fallback_same_cycle`` the share of
cycles asking for machines in which they were all made on the second flavor in that same cycle.

    .venv/bin/python benchmarks/burst.py [--jobs 1000] [--rounds 3]

Ends with ``RESULT burst_1000_create_s=... failing_offering_calls=... fallback_same_cycle=... floor_s=...
floor_ratio=...`` (the burst and its floor: medians over the rounds; goal <= 10 s). Each round also prints the
burst cycle's timings: ``api_create_machine_s`` is the create calls' time summed over the workers, against
``total_s``; on a small machine moto's server, one process that shares its cores, answers no more than some 90
RunInstances a second however many workers ask.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from ec2 import start_moto  # noqa: E402  (benchmarks/ec2.py: moto_server on a free loopback port)
from vctest import config_text, load_text  # noqa: E402

from vcycle.core.states import MachineState  # noqa: E402
from vcycle.loop.cycle import SpaceContext, run_cycle  # noqa: E402
from vcycle.store import Store  # noqa: E402
from vcycle.testing import FakeClock, FakeConnector, wait_for  # noqa: E402

DAEMON = """[settings]
state_url = sqlite:///{d}/state.db
state_dir = {d}
manager_name = burst
cycle_seconds = 300
max_create_fraction = 1
create_workers = {workers}

[demand queue]
type = file
path = {d}/demand.json
poll_seconds = 0.5

[space burst]
api = ec2
url = {url}
region = us-east-1
access_key = testing
secret_key = testing
processors_limit = {limit}

[machinetype burst pilot]
root_image = image:{ami}
flavor_names = t3.micro
min_processors = 2
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
user_data = pilot-container
demand = queue
jobs_per_machine = 1
"""


def image(ec2: Any) -> str:
    """The one image of a moto server started without its default AMIs."""
    return str(ec2.register_image(Name="cernvm-burst", Architecture="x86_64", RootDeviceName="/dev/sda1",
                                  BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20}}])[
        "ImageId"])


def floor(jobs: int, workers: int) -> float:
    """Seconds moto's server takes to answer ``jobs`` bare RunInstances from ``workers`` threads (boto3 alone, the
    same size of user-data and the same tags as vcycle's): what no manager can beat on this machine."""
    server, url = start_moto(default_amis=False)
    try:
        ec2: Any = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")
        ami = image(ec2)
        user_data = b"#!/bin/sh\n" + b"x" * 9000
        tags = [{"Key": k, "Value": "v" * 60} for k in ("vcycle-space", "vcycle-machinetype", "vcycle-manager",
                                                        "vcycle-request", "machinefeatures", "jobfeatures",
                                                        "joboutputs")]

        def create(i: int) -> None:
            ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro", UserData=user_data,
                              ClientToken=f"floor-{i}", InstanceInitiatedShutdownBehavior="terminate",
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "Name", "Value": f"floor-{i}"}, *tags]}])

        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(create, range(jobs)))
        return time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)


def burst(jobs: int, workers: int) -> float:
    """Seconds from the demand's rise to every create answered, against a real daemon and moto's server."""
    server, url = start_moto(default_amis=False)
    try:
        ec2: Any = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")
        ami = image(ec2)
        with tempfile.TemporaryDirectory(prefix="vcycle-burst-") as directory:
            d = Path(directory)
            demand = d / "demand.json"
            demand.write_text(json.dumps({"burst": {"pilot": {"idle_jobs": 0}}}))
            (d / "v.conf").write_text(DAEMON.format(d=d, url=url, ami=ami, limit=2 * jobs, workers=workers))
            daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(d / "v.conf"),
                                       "--log-file", str(d / "vcycle.log")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: "cycle" in (d / "vcycle.log").read_text() if (d / "vcycle.log").exists()
                         else False, seconds=60)
                time.sleep(2)  # the first cycle is over and the watch has had its first look
                store = Store.open(f"sqlite:///{d}/state.db", readonly=True)
                new = d / "demand.new"
                new.write_text(json.dumps({"burst": {"pilot": {"idle_jobs": jobs}}}))
                started = time.perf_counter()
                new.replace(demand)  # atomically, as a site's exporter would
                while True:
                    answered = sum(1 for r in store.load("burst").records if r.state is not MachineState.REQUESTED)
                    if answered >= jobs:
                        break
                    if time.perf_counter() - started > 600:
                        raise SystemExit(f"only {answered} of {jobs} creates answered after 600 s")
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
                wait_for(lambda: (store.last_reports().get("burst", {}).get("counts", {}).get("creates", 0)) > 0,
                         seconds=120)
                timings = store.last_reports()["burst"]["timings"]
                print("  the burst's cycle: " + " ".join(f"{k}={v:.2f}" for k, v in sorted(timings.items())))
                store.close()
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return elapsed


def failing_offering() -> tuple[int, float]:
    """(most calls reaching the full flavor in one cooldown window, share of cycles falling through at once)."""
    logging.disable(logging.CRITICAL)
    clock, cloud = FakeClock(), FakeConnector(flavors={"m5.large": 2, "m5a.large": 2})
    cloud.full.add("m5.large")
    config = load_text(config_text(limit=2000, settings={"max_create_fraction": 0.02}, machinetypes={
        "spot": {"flavor_names": "m5.large m5a.large", "min_processors": 2, "max_processors": 2,
                 "target_share": 1}}))
    with tempfile.TemporaryDirectory(prefix="vcycle-offering-") as directory:
        store = Store.open(f"sqlite:///{directory}/state.db")
        ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, lambda *a: b"#!/bin/sh\n", clock)
        windows: dict[int, int] = {}
        asked = fell = 0
        for minute in range(60):
            before = len(cloud.created_on)
            report = run_cycle(ctx)
            made = cloud.created_on[before:]
            windows[minute // 3] = windows.get(minute // 3, 0) + made.count("m5.large")
            creates = [d for d in report.decisions if d.rule == "share"]
            if creates:
                asked += 1
                fell += made.count("m5a.large") == len(creates)
            clock.advance(60)
        store.close()
    logging.disable(logging.NOTSET)
    return max(windows.values()), fell / asked if asked else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="the settings' create_workers (its default: 8)")
    args = parser.parse_args()
    times, floors = [], []
    for round_ in range(args.rounds):
        times.append(burst(args.jobs, args.workers))
        floors.append(floor(args.jobs, args.workers))
        print(f"round {round_ + 1}: {args.jobs} creates answered {times[-1]:.2f} s after the demand rose; "
              f"moto answers {args.jobs} bare RunInstances in {floors[-1]:.2f} s (ratio {times[-1] / floors[-1]:.2f})")
    calls, fallback = failing_offering()
    print(f"full offering: at most {calls} create call(s) per 180 s window; {fallback:.3f} of the cycles made "
          "their machines on the next offering in the same cycle")
    ratio = statistics.median(t / f for t, f in zip(times, floors, strict=True))
    print(f"RESULT burst_{args.jobs}_create_s={statistics.median(times):.2f} failing_offering_calls={calls} "
          f"fallback_same_cycle={fallback:.3f} floor_s={statistics.median(floors):.2f} floor_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
