"""Create and then terminate 500 EC2 instances across 5 spaces: vcycle next to a plain boto3 loop.

Each talks over HTTP to a moto server of its own, started here as its own
process (``moto_server``) on a free loopback port. vcycle runs its daemon's
code path (Manager.cycle): one cycle creates 100 instances in each of the 5
spaces (user-data rendered, intent recorded in SQLite first), then, with the
spaces' shutdown_time moved into the past, one cycle terminates them all.
The plain loop makes the same calls as vcycle's two cycles, one after the
other: per space a tag-filtered DescribeInstances, DescribeImages,
DescribeInstanceTypes and 100 RunInstances (same tags, user-data and client
tokens); then per space DescribeInstances and 100 TerminateInstances. The
ratio is what vcycle adds (its store, planning, rendering) to the API calls
themselves, less what its concurrency saves.

    .venv/bin/python benchmarks/ec2.py [--spaces 5] [--per-space 100]

Ends with ``RESULT boto3_ratio=...``: the median over the rounds of vcycle's time / the loop's time
(both sides share this machine's cores with the moto server, so single rounds vary).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import boto3

from vcycle.config import load_config
from vcycle.loop.daemon import Manager
from vcycle.store import Store
from vcycle.testing import free_port


def start_moto(default_amis: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    """moto's server on a free loopback port; without ``default_amis`` it holds no image (moto scans its 1,300
    default AMIs on every RunInstances, a cost of the emulator that no cloud has)."""
    port = free_port()
    env = {**os.environ, **({} if default_amis else {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})}
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto_server did not start")


def client(url: str) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def write_config(directory: str, url: str, ami: str, spaces: list[str], per_space: int, shutdown: int | None) -> str:
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", "max_create_fraction = 1",
             "create_workers = " + os.environ.get("BENCH_CREATE_WORKERS", "8"),
             "space_workers = " + os.environ.get("BENCH_SPACE_WORKERS", "16")]
    for space in spaces:
        lines += [f"[space {space}]", "api = ec2", f"url = {url}", "access_key = testing", "secret_key = testing",
                  f"processors_limit = {per_space}"]
        if shutdown is not None:
            lines.append(f"shutdown_time = {shutdown}")
        lines += [f"[machinetype {space} pilot]", f"root_image = image:{ami}", "flavor_names = t2.micro",
                  "target_share = 1", "backoff_seconds = 0", "fizzle_seconds = 0", "user_data = pilot-container"]
    path = os.path.join(directory, "bench.conf")
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    return path


def run_vcycle(url: str, ami: str, spaces: list[str], per_space: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as directory:
        config = load_config([write_config(directory, url, ami, spaces, per_space, None)], hostname="bench")
        store = Store.open(config.settings.state_url)
        started = time.perf_counter()
        reports = Manager(config, store).cycle()
        created = sum(r.counts.get("creates", 0) for r in reports)
        past = int(time.time()) - 1
        config = load_config([write_config(directory, url, ami, spaces, per_space, past)], hostname="bench")
        reports = Manager(config, store).cycle()
        elapsed = time.perf_counter() - started
        deleted = sum(r.counts.get("deletes", 0) for r in reports)
        store.close()
    if created != deleted:
        raise SystemExit(f"vcycle created {created} but deleted {deleted}")
    return elapsed, created


def run_loop(url: str, ami: str, spaces: list[str], per_space: int) -> tuple[float, int]:
    """The calls vcycle makes in its two cycles, made one after the other by plain boto3."""
    ec2 = client(url)
    user_data = open(os.path.join(os.path.dirname(__file__), "..", "userdata", "templates", "pilot-container.j2"),
                     "rb").read()

    def listing(space: str) -> list[str]:
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:vcycle-space", "Values": [space]}], PaginationConfig={"PageSize": 1000})
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"]

    started = time.perf_counter()
    created = 0
    for space in spaces:  # the first cycle: list, look up the image and the type, create
        listing(space)
        ec2.describe_images(ImageIds=[ami])
        ec2.describe_instance_types(InstanceTypes=["t2.micro"])
        for i in range(per_space):
            token = uuid.uuid4().hex
            tags = [{"Key": "Name", "Value": f"plain-{space}-{i}"}, {"Key": "vcycle-space", "Value": space},
                    {"Key": "vcycle-machinetype", "Value": "pilot"}, {"Key": "vcycle-manager", "Value": "plain"},
                    {"Key": "vcycle-request", "Value": token}]
            ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t2.micro", UserData=user_data,
                              ClientToken=token, InstanceInitiatedShutdownBehavior="stop",
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
            created += 1
    for space in spaces:  # the second cycle: list, terminate
        for instance in listing(space):
            ec2.terminate_instances(InstanceIds=[instance])
    return time.perf_counter() - started, created


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", type=int, default=5)
    parser.add_argument("--per-space", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both sides; the median ratio is the result")
    args = parser.parse_args()
    ratios = []
    for round_ in range(args.rounds):
        results = {}
        for side in ("loop", "vcycle"):  # each side against a fresh moto server: neither lists the other's instances
            server, url = start_moto()
            try:
                images = client(url).describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
                ami = images["Images"][0]["ImageId"]
                if side == "loop":
                    results[side] = run_loop(url, ami, [f"plain{i}" for i in range(args.spaces)], args.per_space)
                else:
                    results[side] = run_vcycle(url, ami, [f"bench{i}.example.org" for i in range(args.spaces)],
                                               args.per_space)
            finally:
                server.terminate()
                server.wait(timeout=10)
        (loop_seconds, loop_count), (vcycle_seconds, vcycle_count) = results["loop"], results["vcycle"]
        ratios.append(vcycle_seconds / loop_seconds)
        print(f"round {round_ + 1}: plain boto3 loop of the same calls: {loop_count} created and terminated in "
              f"{loop_seconds:.2f} s; vcycle (2 cycles, {args.spaces} spaces): {vcycle_count} in "
              f"{vcycle_seconds:.2f} s; ratio {ratios[-1]:.2f}")
    print(f"RESULT boto3_ratio={statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
