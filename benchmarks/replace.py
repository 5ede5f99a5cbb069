"""A roll of 500 machines after an image change, at the default disruption budget, on simulated time.

Set-up: the real cycle (vcycle/loop/cycle.py) over FakeConnector, a real SQLite store and a FakeClock, fed by
HTCondor demand through the code's own BindingsPool over tests/fakecondor.py (classad2 ads; no HTCondor daemon
runs here). A queue of jobs (1 core, 20 to 60 minutes each) is kept 20 deeper than the 500 machines, in a space
with 10 % more room than they take (``--headroom``, for the replacements made ahead); machines' startds join the
pool, take jobs, and leave once a drain arrived and their job ended (a peaceful drain). Once
500 machines run jobs, the machinetype's root_image changes, and cycles go on, one a simulated minute, until no
drifted machine is left.

    .venv/bin/python benchmarks/replace.py [--machines 500] [--seed 7]

Then, against a real ``vcycle daemon`` (a process, with its HTTPS endpoint over TLS, a fake cloud in a file and
cycle_seconds 300), ``--interruptions`` machines each report a spot interruption notice as the shipped templates
do (``PUT joboutputs/interruption`` with the machine's own token), one after the other; the delay is from the
report's send to the store showing the machine DRAINING (polled every 10 ms), wall time.

Ends with ``RESULT roll_minutes=... max_disrupting=... running_floor_ratio=... interruption_to_draining_s=...``:
the simulated minutes the roll took, the most machines draining at once (the budget is 10 % of the working
machines, replacements included), the fewest jobs running during the roll over the machines' count, and the
median interruption-to-DRAINING delay (goal <= 10 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import re
import shlex
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "web")]

import classad2  # noqa: E402
from fakecondor import FakeHTCondor, FakePool, startd  # noqa: E402
from pki import PKI, grid_name  # noqa: E402
from vctest import load_text  # noqa: E402

from vcycle.core import drift  # noqa: E402
from vcycle.core.model import CloudStatus  # noqa: E402
from vcycle.core.states import MachineState  # noqa: E402
from vcycle.demand import make_source  # noqa: E402
from vcycle.demand.htcondor import BindingsPool  # noqa: E402
from vcycle.loop.cycle import SpaceContext, run_cycle  # noqa: E402
from vcycle.store import Store  # noqa: E402
from vcycle.testing import FakeClock, FakeConnector, free_port, wait_for  # noqa: E402

CONFIG = """
[settings]
manager_name = bench
max_create_fraction = 0.2

[demand pool]
type = htcondor
collector = cm.example.org
min_idle_seconds = 0

[space roll]
api = fake
processors_limit = {limit}

[machinetype roll atlas]
user_data = ud
root_image = image:{image}
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
retire_idle_seconds = 900
register_timeout_seconds = 900
demand = pool
htcondor_constraint = x509UserProxyVOName == "atlas"
"""


class Pool:
    """The jobs and the machines' startds."""

    def __init__(self, rng: random.Random, depth: int) -> None:
        self.rng, self.depth = rng, depth
        self.pool = FakePool({"s1": []}, [])
        self.jobs = self.pool.schedds["s1"]
        self.running: dict[tuple[int, int], tuple[str, int]] = {}  # job -> machine, finishes at
        self.drained: set[str] = set()
        self.next_job = 0

    def submit(self, now: int) -> None:
        while len(self.jobs) < self.depth:
            self.next_job += 1
            ad = classad2.ClassAd()
            for key, value in (("ClusterId", 1), ("ProcId", self.next_job), ("JobStatus", 1), ("QDate", now),
                               ("EnteredCurrentStatus", now), ("RequestCpus", 1), ("RequestMemory", 1000),
                               ("RequestDisk", 1000), ("x509UserProxyVOName", "atlas")):
                ad[key] = value
            self.jobs.append(ad)

    def play(self, cloud: FakeConnector, now: int) -> int:
        """A minute of the pool; how many jobs run."""
        for key, (_, finish) in list(self.running.items()):
            if finish <= now:
                del self.running[key]
                self.jobs[:] = [a for a in self.jobs if (a["ClusterId"], a["ProcId"]) != key]
        busy = {name for name, _ in self.running.values()}
        waiting = iter([a for a in self.jobs if a["JobStatus"] == 1])
        self.pool.startds.clear()
        for machine in cloud.ours():
            if machine.status is not CloudStatus.RUNNING:
                continue
            if machine.name in self.drained and machine.name not in busy:
                continue  # drained and its job done: the startd has left
            if machine.name not in busy and machine.name not in self.drained:
                ad = next(waiting, None)
                if ad is not None:
                    ad["JobStatus"], ad["EnteredCurrentStatus"] = 2, now
                    self.running[(ad["ClusterId"], ad["ProcId"])] = (machine.name, now + self.rng.randint(1200, 3600))
                    busy.add(machine.name)
            self.pool.startds.append(startd(machine.name, "roll", "Claimed" if machine.name in busy else "Unclaimed"))
        self.submit(now)
        return len(self.running)


DAEMON = """[settings]
state_url = sqlite:///{d}/state.db
state_dir = {d}
manager_name = bench
cycle_seconds = 300
max_create_fraction = 1
https_listen = 127.0.0.1:{port}
https_cert = {cert}
https_key = {key}

[space spot]
api = fake
state_file = {d}/cloud.json
processors_limit = {count}
https_host = 127.0.0.1
https_port = {port}

[machinetype spot pilot]
user_data = pilot-container
target_share = 1
backoff_seconds = 600
fizzle_seconds = 0
"""


def interruption_delays(count: int) -> list[float]:
    """Seconds from each machine's interruption report to the store showing it DRAINING, on a real daemon."""
    with tempfile.TemporaryDirectory(prefix="vcycle-interrupt-") as directory:
        d = Path(directory)
        pki = PKI.create(d / "pki")
        cert, key = pki.issue("server", grid_name(("CN", "localhost")), server=True)
        port = free_port()
        (d / "v.conf").write_text(DAEMON.format(d=d, port=port, cert=cert, key=key, count=count))
        daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(d / "v.conf"),
                                   "--log-file", str(d / "vcycle.log")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        cloud = FakeConnector(state_file=str(d / "cloud.json"))
        delays = []
        store = None
        try:
            wait_for(lambda: (d / "cloud.json").exists() and len(cloud.ours()) == count, seconds=60)
            store = Store.open(f"sqlite:///{d}/state.db", readonly=True)
            saved = json.loads((d / "cloud.json").read_text())["machines"]
            context = ssl.create_default_context(cafile=str(pki.directory / "ca.pem"))
            notice = json.dumps({"kind": "spot", "notice": {"action": "terminate", "time": "2026-12-02T18:02:00Z"}})
            with httpx.Client(verify=context, base_url=f"https://127.0.0.1:{port}", timeout=30) as http:
                for machine in saved:
                    user_data = base64.b64decode(machine["user_data"]).decode()
                    found = re.search(r"^VCYCLE_TOKEN=(.+)$", user_data, re.M)
                    assert found is not None, "no token in the machine's user-data"
                    token = shlex.split(found.group(1))[0]
                    sent = time.perf_counter()
                    answer = http.put(f"/machines/spot/{machine['name']}/joboutputs/interruption", content=notice,
                                      headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 204, answer.text

                    def draining(name: str = machine["name"]) -> bool:
                        return any(r.name == name and r.state is MachineState.DRAINING
                                   for r in store.load("spot").records)

                    while not draining():
                        if time.perf_counter() - sent > 60:
                            raise SystemExit(f"{machine['name']} not DRAINING 60 s after its notice")
                        time.sleep(0.01)
                    delays.append(time.perf_counter() - sent)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            if store is not None:
                store.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--headroom", type=float, default=0.1,
                        help="room in the space's processors_limit beyond the machines, for replacements made ahead")
    parser.add_argument("--interruptions", type=int, default=5,
                        help="machines reporting an interruption notice to a real daemon, one after the other")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    rng, clock = random.Random(args.seed), FakeClock()
    limit = round(args.machines * (1 + args.headroom))
    before = load_text(CONFIG.format(limit=limit, image="cernvm-5.1"))
    after = load_text(CONFIG.format(limit=limit, image="cernvm-5.2"))
    pool = Pool(rng, args.machines + 20)
    with tempfile.TemporaryDirectory(prefix="vcycle-replace-") as directory:
        store = Store.open(f"sqlite:///{directory}/state.db")
        cloud = FakeConnector(clock=clock, boot_seconds=120)
        source = make_source(before.demands["pool"], before.spaces)
        source.pool, source.clock = BindingsPool(None, module=FakeHTCondor(pool.pool)), clock  # type: ignore[attr-defined]
        render = lambda *a: b"#!/bin/sh\n"  # noqa: E731
        ctx = SpaceContext(before, before.spaces["roll"], cloud, store, {"pool": source}, render, clock)
        pool.submit(int(clock().timestamp()))
        minutes = 0
        while pool.play(cloud, int(clock().timestamp())) < args.machines and minutes < 600:
            run_cycle(ctx)
            clock.advance(60)
            minutes += 1
        print(f"{args.machines} machines run jobs after {minutes} simulated minutes; the image changes now")
        ctx = SpaceContext(after, after.spaces["roll"], cloud, store, {"pool": source}, render, clock)
        current = after.spaces["roll"].machinetypes["atlas"].made_by
        most, floor, rolled = 0, args.machines, 0
        while rolled < 24 * 60:
            rolled += 1
            run_cycle(ctx)
            pool.drained |= {r.name for r in store.load("roll").records if r.state is MachineState.DRAINING}
            clock.advance(60)
            running = pool.play(cloud, int(clock().timestamp()))
            live = store.load("roll").records
            most = max(most, sum(1 for r in live if r.state is MachineState.DRAINING))
            floor = min(floor, running)
            if not any(drift.drifted(r.made_by, current) for r in live):
                break
        left = sum(1 for r in store.load("roll").records if drift.drifted(r.made_by, current))
        store.close()
    print(f"rolled in {rolled} simulated minutes ({left} drifted left); at most {most} draining at once "
          f"(budget 10 % of {args.machines}); at least {floor} of {args.machines} jobs running")
    delays = interruption_delays(args.interruptions)
    print("interruption notice to DRAINING, one machine after another: "
          + " ".join(f"{x:.3f}" for x in delays) + " s")
    print(f"RESULT roll_minutes={rolled} max_disrupting={most} running_floor_ratio={floor / args.machines:.3f} "
          f"interruption_to_draining_s={statistics.median(delays):.3f}")


if __name__ == "__main__":
    main()
