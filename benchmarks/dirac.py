"""Time from a job reaching Waiting in a real DIRAC to vcycle's create call.

DIRAC is the project's testbed (scripts/dirac_testbed.py: JobManager,
OptimizationMind and the Optimizers, Matcher, ResourceStatus, on MariaDB).
vcycle runs its real daemon (vcycle.loop.daemon.Daemon, in a thread) with a
``[demand] type = dirac`` section; the cloud is the FakeConnector, whose
create call is timed, with machines that stay booting so that each
create answers one new job.

A DIRAC client submits one job at a time and watches the job's Status in
JobDB every 10 ms; the figure is the time from seeing it Waiting to the
create call. Two settings:

* the daemon's defaults: a cycle every ``cycle_seconds`` (60), demand asked once per cycle. A job waits for
  the next cycle, so its delay depends on when in the cycle it arrives: jobs are submitted at spread-out
  moments after a cycle (seeded), and the mean and the worst are reported;
* the fastest demand polling vcycle supports: ``poll_seconds = 0.5``, with which the source asks DIRAC
  between cycles and starts a cycle as soon as a machinetype has more waiting jobs.

    .venv/bin/python benchmarks/dirac.py [--default-samples 4] [--polled-samples 10]

Ends with ``RESULT waiting_to_create_s=... waiting_to_create_s_max=... waiting_to_create_s_polled=...
waiting_to_create_s_polled_max=...``: the mean and worst with the defaults, the median and worst when polled.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import dirac_testbed

from vcycle.config import load_config
from vcycle.loop.daemon import Daemon
from vcycle.store import Store
from vcycle.testing import FakeConnector, wait_for

CLIENT = dirac_testbed.USER_CLIENT + '''
from DIRAC.WorkloadManagementSystem.DB.JobDB import JobDB

directory, site = sys.argv[1:3]
manager, jobs = user_jobs(directory), JobDB()
print("ready", flush=True)
for line in sys.stdin:  # one tag per line: submit a job with it, say when it is Waiting
    jdl = '[Executable = "/bin/true"; JobType = "User"; CPUTime = 3600; Site = "%s"; Tags = {"%s"};]' % (
        site, line.strip())
    submitted = manager.submitJob(jdl)
    assert submitted["OK"], submitted
    job = submitted["JobID"]
    while jobs.getJobAttribute(job, "Status")["Value"] != "Waiting":
        time.sleep(0.01)
    print("waiting", job, time.time(), flush=True)
'''


class Timed(FakeConnector):
    """The FakeConnector, noting when each create call comes."""

    def __init__(self) -> None:
        super().__init__(boot_seconds=10 ** 6)  # machines stay booting: each create answers one new job
        self.created_at: list[float] = []
        self.called = threading.Condition()

    def create_machine(self, spec: Any) -> Any:
        with self.called:
            self.created_at.append(time.time())
            self.called.notify_all()
        return super().create_machine(spec)


def said(client: subprocess.Popen[str], word: str) -> str:
    """The rest of the client's next line starting with ``word`` (DIRAC logs to the same stdout)."""
    assert client.stdout is not None
    for line in client.stdout:
        if line.startswith(word):
            return line[len(word):].strip()
    raise SystemExit(f"the DIRAC client ended (status {client.wait()}) before saying {word}")


def config_text(testbed: Any, directory: str, tag: str, poll_seconds: float) -> str:
    d = testbed.directory
    return f"""
[settings]
state_url = sqlite:///{directory}/state.db
state_dir = {directory}
max_create_fraction = 1
[space bench]
api = fake
processors_limit = 1000
[demand dirac]
type = dirac
configuration = {d}/server/etc/dirac.cfg
host_cert = {d}/pki/hostcert.pem
host_key = {d}/pki/hostkey.pem
ca_dir = {d}/pki/certificates
vo = {dirac_testbed.VO}
python = {testbed.python}
poll_seconds = {poll_seconds}
[machinetype bench pilot]
user_data = {directory}/ud
backoff_seconds = 600
fizzle_seconds = 300
target_share = 1
demand = dirac
dirac_site = {dirac_testbed.SITE}
dirac_tags = {tag}
dirac_required_tags = {tag}
"""


def measure(testbed: Any, client: subprocess.Popen[str], samples: int, poll_seconds: float,
            pauses: list[float]) -> list[float]:
    """Delays of ``samples`` jobs with one daemon; ``pauses``: seconds to wait after a create before the next."""
    tag = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="vcycle-bench-dirac-") as directory:
        Path(directory, "vcycle.conf").write_text(config_text(testbed, directory, tag, poll_seconds))
        (Path(directory) / "ud").write_text("#!/bin/sh\n")
        config = load_config([str(Path(directory, "vcycle.conf"))])
        store = Store.open(config.settings.state_url)
        cloud = Timed()
        daemon = Daemon(None, config, store)
        daemon.manager.connector_factory = lambda space, cfg: cloud
        runner = threading.Thread(target=daemon.run, daemon=True)
        runner.start()
        delays = []
        try:
            wait_for(store.last_reports, 120, "the daemon's first cycle")  # nothing to create in it
            for index in range(samples):
                time.sleep(pauses[index % len(pauses)])
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(tag + "\n")
                client.stdin.flush()
                _, waiting_at = said(client, "waiting").split()
                with cloud.called:
                    if not cloud.called.wait_for(lambda n=index: len(cloud.created_at) > n, timeout=300):
                        raise SystemExit("no create call within 300 s")
                delays.append(cloud.created_at[index] - float(waiting_at))
                print(f"  job {index + 1}: Waiting -> create {delays[-1]:.2f} s", flush=True)
        finally:
            daemon.stopping = True
            daemon.wake.set()
            runner.join(timeout=120)
            store.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--default-samples", type=int, default=4)
    parser.add_argument("--polled-samples", type=int, default=10)
    args = parser.parse_args()
    reason = dirac_testbed.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"no DIRAC testbed here: {reason}")
    with tempfile.TemporaryDirectory(prefix="vcycle-dirac-testbed-") as where:
        started = time.monotonic()
        testbed = dirac_testbed.start(Path(where))
        print(f"DIRAC testbed up in {time.monotonic() - started:.0f} s", flush=True)
        client = subprocess.Popen([testbed.python, "-c", CLIENT, str(testbed.directory), dirac_testbed.SITE],
                                  env=testbed.env, cwd=testbed.directory, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            said(client, "ready")
            rng = random.Random(10)
            print(f"daemon defaults (cycle_seconds 60, demand once per cycle), {args.default_samples} jobs:")
            spread = [rng.uniform(0, 60) for _ in range(args.default_samples)]
            default = measure(testbed, client, args.default_samples, 0.0, spread)
            print(f"poll_seconds 0.5, {args.polled_samples} jobs:")
            polled = measure(testbed, client, args.polled_samples, 0.5, [rng.uniform(0, 2) for _ in range(5)])
        finally:
            client.kill()
            testbed.stop()
    print(json.dumps({"default": [round(d, 3) for d in default], "polled": [round(d, 3) for d in polled]}))
    print(f"RESULT waiting_to_create_s={statistics.mean(default):.2f} waiting_to_create_s_max={max(default):.2f} "
          f"waiting_to_create_s_polled={statistics.median(polled):.2f} "
          f"waiting_to_create_s_polled_max={max(polled):.2f}")


if __name__ == "__main__":
    main()
