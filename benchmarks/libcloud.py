"""vcycle through libcloud's EC2 driver next to a plain libcloud loop making the same calls, against moto's server.

moto's EC2 runs on loopback (its own thread server), reached through the proxy that gives EC2's XML namespaces
back (tests/ec2proxy.py), as libcloud reads them. vcycle runs its daemon's code path (Manager.cycle), one call
at a time (``create_workers = 1``, as the loop): one cycle creates N machines (user-data rendered from the
shipped ``pilot-container`` template, intent recorded in SQLite first), then, with the space's shutdown_time in
the past, one cycle deletes them. The loop makes the same calls with the same driver: list nodes (the space's
tag), list sizes, get the image, N creates with the same tags and user-data; list nodes, N destroys. The rounds
alternate which side goes first, after a warm-up round that is not counted.

    .venv/bin/python benchmarks/libcloud.py [--machines 100] [--rounds 5]

Ends with ``RESULT libcloud_ratio=...``: the median over the rounds of vcycle's time / the loop's.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This file's own name would shadow the libcloud package: take its directory off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ec2proxy import ec2_as_ec2_says_it  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.connectors.libcloud import LibcloudSpace, make_driver  # noqa: E402
from vcycle.loop.daemon import Manager  # noqa: E402
from vcycle.store import Store  # noqa: E402

TEMPLATE = ROOT / "userdata" / "templates" / "pilot-container.j2"


def write(directory: str, address: str, ami: str, machines: int, space: str, shutdown: int | None) -> list[str]:
    host, _, port = address.partition(":")
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", "max_create_fraction = 1", "create_workers = 1", f"[space {space}]",
             "api = libcloud", "driver = ec2", "key = testing", "secret = testing", "region = us-east-1",
             f"host = {host}", f"port = {port}", "secure = false", "signature_version = 4",
             f"processors_limit = {machines * 2}"]
    if shutdown is not None:
        lines.append(f"shutdown_time = {shutdown}")
    lines += [f"[machinetype {space} pilot]", f"root_image = image:{ami}", "flavor_names = t3.micro",
              "target_share = 1", "backoff_seconds = 0", "fizzle_seconds = 0", "user_data = pilot-container"]
    path = f"{directory}/bench.conf"
    Path(path).write_text("\n".join(lines) + "\n")
    return [path]


def run_vcycle(address: str, ami: str, machines: int) -> float:
    space = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as directory:
        config = load_config(write(directory, address, ami, machines, space, None), hostname="bench")
        store = Store.open(config.settings.state_url)
        started = time.perf_counter()
        reports = Manager(config, store, processes=1).cycle()
        created = sum(r.counts.get("creates", 0) for r in reports)
        config = load_config(write(directory, address, ami, machines, space, int(time.time()) - 1), hostname="bench")
        deleted = sum(r.counts.get("deletes", 0) for r in Manager(config, store, processes=1).cycle())
        elapsed = time.perf_counter() - started
        store.close()
    if created != machines or deleted != machines:
        for error in [e for r in reports for e in r.errors][:3]:
            print(f"  vcycle: {error.message}")
        raise SystemExit(f"vcycle created {created} and deleted {deleted} of {machines}")
    return elapsed


def run_loop(address: str, ami: str, machines: int) -> float:
    host, _, port = address.partition(":")
    driver = make_driver(LibcloudSpace(driver="ec2", key="testing", secret="testing", region="us-east-1", host=host,
                                       port=int(port), secure=False, signature_version="4"), 60)
    space = f"plain-{uuid.uuid4().hex[:8]}"
    user_data = TEMPLATE.read_bytes()
    started = time.perf_counter()
    driver.list_nodes(ex_filters={"tag:vcycle-space": space})
    size = next(s for s in driver.list_sizes() if s.id == "t3.micro")
    image = driver.get_image(ami)
    for n in range(machines):
        tags = {"vcycle-space": space, "vcycle-machinetype": "pilot", "vcycle-manager": "plain",
                "vcycle-request": uuid.uuid4().hex}
        driver.create_node(name=f"plain-{n}", size=size, image=image, ex_userdata=user_data, ex_metadata=tags)
    found = driver.list_nodes(ex_filters={"tag:vcycle-space": space})
    for node in found:
        driver.destroy_node(node)
    elapsed = time.perf_counter() - started
    if len(found) != machines:
        raise SystemExit(f"the loop created {machines} and found {len(found)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    try:
        ec2 = boto3.client("ec2", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        ami = ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0]["ImageId"]
        with ec2_as_ec2_says_it(moto) as address:
            run_vcycle(address, ami, args.machines)  # warm-up, not counted
            ratios = []
            for round_ in range(1, args.rounds + 1):
                timed = {}
                for side in (("vcycle", "loop") if round_ % 2 else ("loop", "vcycle")):
                    timed[side] = (run_vcycle if side == "vcycle" else run_loop)(address, ami, args.machines)
                ratios.append(timed["vcycle"] / timed["loop"])
                print(f"round {round_}: vcycle {timed['vcycle']:.2f} s, libcloud loop {timed['loop']:.2f} s for "
                      f"{args.machines} creates and deletes: ratio {ratios[-1]:.2f}", flush=True)
    finally:
        server.stop()
    print(f"RESULT libcloud_ratio={statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
