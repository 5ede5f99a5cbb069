"""Create and then delete 50 servers in a real Nova: vcycle next to a plain openstacksdk loop.

The cloud is the project's OpenStack testbed (scripts/openstack_testbed.py:
Keystone, Glance, Placement, the Neutron API and Nova with its fake virt
driver, on this machine). vcycle runs its daemon's code path
(Manager.cycle): one cycle creates 50 servers (user-data rendered from the
shipped ``pilot-container`` template, intent recorded in SQLite first), then,
with the space's shutdown_time moved into the past, one cycle deletes them.
The plain loop makes the same calls one after the other: list servers, list
flavors, find the image, 50 creates with the same metadata and user-data;
then list servers and 50 deletes. Between rounds Nova is left to finish
building and deleting, so that neither side meets the other's work.

vcycle makes its cloud calls one at a time here (``create_workers = 1``,
``BENCH_CREATE_WORKERS`` changes it), as the loop does, so that the two make
the same calls in the same order. On SQLite (``--mysql none``) Nova's
services wait on each other's write locks and the figures swing by several
times from round to round; on MariaDB they agree within about 10%.

    .venv/bin/python benchmarks/openstack.py [--servers 50] [--rounds 5] [--mysql USER@HOST:PORT|none]

Nova's and Placement's databases are on a private MariaDB started for the run
(scripts/services.py), or on the one ``--mysql`` names (the testbed makes and
drops databases of its own there); the message bus is a private RabbitMQ.
A warm-up round comes first and is not counted; the rounds alternate which
side goes first.

Ends with ``RESULT sdk_ratio=... vcycle_own_s=...``: the median over the rounds of vcycle's time / the loop's
time, and of the seconds vcycle spent on its own (its time less the cloud calls it waited on).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# This file's own name would shadow openstacksdk's package: take its directory off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import openstack_testbed  # noqa: E402
import services  # noqa: E402

from vcycle.config import load_config  # noqa: E402
from vcycle.loop.daemon import Manager  # noqa: E402
from vcycle.store import Store  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "userdata" / "templates" / "pilot-container.j2"


def write_config(directory: str, testbed: Any, servers: int, shutdown: int | None) -> list[str]:
    keys = [f"{k} = {v}" for k, v in testbed.space_keys().items()]
    lines = ["[settings]", f"state_url = sqlite:///{directory}/state.db", f"state_dir = {directory}",
             "manager_name = bench", "max_create_fraction = 1",
             "create_workers = " + os.environ.get("BENCH_CREATE_WORKERS", "1"), "[space bench]", "api = openstack",
             *keys, f"processors_limit = {servers}"]
    if shutdown is not None:
        lines.append(f"shutdown_time = {shutdown}")
    lines += ["[machinetype bench pilot]", "root_image = image:cernvm-test", "flavor_names = m1.tiny",
              "target_share = 1", "backoff_seconds = 0", "fizzle_seconds = 0", "user_data = pilot-container"]
    path = os.path.join(directory, "bench.conf")
    Path(path).write_text("\n".join(lines) + "\n")
    return [path]


def clear(admin: Any) -> None:
    for server in admin.compute.servers(all_projects=True):
        admin.compute.delete_server(server.id, ignore_missing=True)
    deadline = time.monotonic() + 300
    while list(admin.compute.servers(all_projects=True)):  # not even listed as DELETED any more
        if time.monotonic() > deadline:
            raise SystemExit("servers not deleted within 300 s")
        time.sleep(0.5)


def run_vcycle(testbed: Any, servers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as directory:
        config = load_config(write_config(directory, testbed, servers, None), hostname="bench")
        store = Store.open(config.settings.state_url)
        started = time.perf_counter()
        reports = Manager(config, store, processes=1).cycle()
        created = sum(r.counts.get("creates", 0) for r in reports)
        api = sum(v for r in reports for k, v in r.timings.items() if k.startswith("api_"))
        for error in [e for r in reports for e in r.errors][:5]:
            print(f"  vcycle's create cycle: {error}")
        config = load_config(write_config(directory, testbed, servers, int(time.time()) - 1), hostname="bench")
        reports = Manager(config, store, processes=1).cycle()
        deleted = sum(r.counts.get("deletes", 0) for r in reports)
        api += sum(v for r in reports for k, v in r.timings.items() if k.startswith("api_"))
        elapsed = time.perf_counter() - started
        if config.settings.create_workers == 1:  # with concurrent calls their sum exceeds the time they took
            print(f"  vcycle: {elapsed:.2f} s, of which {api:.2f} s waiting on cloud calls", flush=True)
        else:
            api = float("nan")
        store.close()
    if created != servers or deleted != created:
        raise SystemExit(f"vcycle created {created} and deleted {deleted} of {servers}")
    return elapsed, created, api


def run_loop(testbed: Any, servers: int) -> tuple[float, int]:
    """The calls of vcycle's two cycles, made one after the other with openstacksdk."""
    conn = testbed.connection()
    user_data = base64.b64encode(TEMPLATE.read_bytes()).decode()
    started = time.perf_counter()
    list(conn.compute.servers(details=True))
    flavors = {f.name: f.id for f in conn.compute.flavors()}
    image = conn.image.find_image("cernvm-test")
    for n in range(servers):
        metadata = {"vcycle-space": "plain", "vcycle-machinetype": "pilot", "vcycle-manager": "plain",
                    "vcycle-request": uuid.uuid4().hex, "name": f"plain-{n}", "machinetype": "pilot"}
        conn.compute.create_server(name=f"plain-{n}", flavor_id=flavors["m1.tiny"], image_id=image.id,
                                   metadata=metadata, user_data=user_data, networks="none")
    deleted = 0
    for server in conn.compute.servers(details=True):
        conn.compute.delete_server(server.id, ignore_missing=True)
        deleted += 1
    elapsed = time.perf_counter() - started
    if deleted != servers:
        raise SystemExit(f"the loop created {servers} and deleted {deleted}")
    return elapsed, servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mysql", metavar="USER@HOST:PORT", default=os.environ.get("BENCH_MYSQL", "private"),
                        help="put Nova's and Placement's databases on this MariaDB (no password); default a private "
                             "one started for the run; 'none' for SQLite")
    args = parser.parse_args()
    reason = openstack_testbed.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot start the OpenStack testbed: {reason}")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="vcycle-bench-openstack-"))
    own: list[services.Service] = []
    try:
        own.append(services.rabbitmq(work))
        if args.mysql == "private":
            own.append(services.mariadb(work))
    except services.ServiceUnavailable as exc:
        for service in own:
            service.stop()
        raise SystemExit(f"cannot start the OpenStack testbed's services: {exc}") from None
    mysql = {"private": own[-1].url if len(own) > 1 else None, "none": None}.get(args.mysql, args.mysql)
    try:
        testbed = openstack_testbed.start(work / "openstack", own[0].url, mysql=mysql)
    except BaseException:
        for service in own:
            service.stop()
        raise
    testbed.own.extend(own)  # stopped with the testbed, the database last
    print(f"OpenStack testbed up in {time.monotonic() - started:.0f}s, Nova on {mysql or 'SQLite'}")
    try:
        admin = testbed.connection(admin=True)
        project = admin.identity.find_project("vcycle")
        admin.set_compute_quotas(project.id, instances=args.servers * 4, cores=args.servers * 8,
                                 ram=args.servers * 8 * 4096)
        clear(admin)
        run_vcycle(testbed, args.servers)  # a warm-up round, not counted: Nova's first builds are slower
        ratios, own = [], []
        for round_ in range(1, args.rounds + 1):
            timed = {}
            for side in (("vcycle", "loop") if round_ % 2 else ("loop", "vcycle")):  # neither always goes first
                clear(admin)
                timed[side] = (run_vcycle if side == "vcycle" else run_loop)(testbed, args.servers)
            (ours, n, api), (theirs, _) = timed["vcycle"], timed["loop"]
            own.append(ours - api)
            ratios.append(ours / theirs)
            print(f"round {round_}: vcycle {ours:.2f} s, openstacksdk loop {theirs:.2f} s for {n} creates and "
                  f"{n} deletes: ratio {ours / theirs:.2f}")
        clear(admin)
    finally:
        testbed.stop()
    own_s = statistics.median(own)
    own_text = "n/a" if math.isnan(own_s) else f"{own_s:.2f}"
    print(f"RESULT sdk_ratio={statistics.median(ratios):.2f} vcycle_own_s={own_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
