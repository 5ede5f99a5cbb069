"""A first look at vcycle doing its whole job on this host: ``make demo``.

It writes a configuration into a new directory and runs the real daemon with
its HTTPS endpoint (on loopback, with a certificate made for the demo) and
one ``api = local`` space: machines are process sessions on this host that
run the shipped ``pilot-container`` user-data. A small batch system plays
along: it queues jobs as files and publishes how many wait in a ``file``
demand source. ``alpha`` pilots take jobs one by one, heartbeat over HTTPS
while they work and stop with '200 Success' when the queue is empty;
``beta`` pilots find their environment broken and stop at once with
'500 Pilot failed', so beta's backoff shows. Later more alpha jobs arrive,
beta's jobs are cancelled, the queue drains and so do the machines.

A live table shows the machines by state (read from the endpoint's API);
then a summary and where to look next. Every process started is stopped at
the end, also on Ctrl-C.

    make demo        (or: .venv/bin/python scripts/demo.py [--seconds 60] [--keep DIR])
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vcycle.testing import free_port, make_server_pki

SPACE = "demo.example.org"
CONFIG = """[settings]
state_url = sqlite:///{dir}/state.db
state_dir = {dir}
manager_name = demo-manager
cycle_seconds = {cycle}
max_create_fraction = 0.5
starting_timeout_seconds = 120
https_listen = 127.0.0.1:{port}
https_cert = {dir}/pki/server.pem
https_key = {dir}/pki/server.key
heartbeat_flush_seconds = 0.5

[demand batch]
type = file
path = {dir}/demand.json

[space {space}]
api = local
processors_limit = 6
https_host = 127.0.0.1
https_port = {port}
ca_bundle = {dir}/pki/ca.pem
cleanup_hours = 24

[machinetype {space} alpha]
user_data = pilot-container
user_data_option_pilot_command = for job in {dir}/queue/alpha/*; do mv "$job" . 2>/dev/null || continue; \
echo "running $(basename "$job")"; sleep {job}; done
user_data_option_heartbeat_seconds = 2
heartbeat_file = vm-heartbeat
heartbeat_seconds = 60
demand = batch
jobs_per_machine = 2
target_share = 3
backoff_seconds = 30
fizzle_seconds = 2
max_wallclock_seconds = 300

[machinetype {space} beta]
user_data = pilot-container
user_data_option_pilot_command = echo "cannot mount the experiment software"; exit 1
heartbeat_file = vm-heartbeat
demand = batch
target_share = 1
backoff_seconds = {backoff}
fizzle_seconds = 2
max_wallclock_seconds = 300
"""


class Batch:
    """The batch system: jobs as files in queue/MACHINETYPE, their count published as demand."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.submitted: collections.Counter[str] = collections.Counter()

    def submit(self, machinetype: str, count: int) -> None:
        queue = os.path.join(self.directory, "queue", machinetype)
        os.makedirs(queue, exist_ok=True)
        for _ in range(count):
            self.submitted[machinetype] += 1
            open(os.path.join(queue, f"job-{self.submitted[machinetype]:03d}"), "w").close()

    def cancel(self, machinetype: str) -> None:
        queue = os.path.join(self.directory, "queue", machinetype)
        for name in os.listdir(queue):
            os.unlink(os.path.join(queue, name))

    def idle(self, machinetype: str) -> int:
        try:
            return len(os.listdir(os.path.join(self.directory, "queue", machinetype)))
        except FileNotFoundError:
            return 0

    def publish(self) -> None:
        document = {SPACE: {mt: {"idle_jobs": self.idle(mt), "running_jobs": 0} for mt in ("alpha", "beta")}}
        temporary = os.path.join(self.directory, "demand.json.new")
        with open(temporary, "w") as stream:
            json.dump(document, stream)
        os.replace(temporary, os.path.join(self.directory, "demand.json"))


class Api:
    """The endpoint's operator API, as an operator's script would read it."""

    def __init__(self, port: int, ca: str) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.context = ssl.create_default_context(cafile=ca)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, context=self.context, timeout=5) as answer:
            body = answer.read().decode()
        return json.loads(body) if path.startswith("/api/") else body


def table(status: dict[str, Any], batch: Batch, heartbeats: int, elapsed: float, notes: list[str]) -> Group:
    space = status["spaces"].get(SPACE, {})
    counts = space.get("machinetypes", {})
    states = ["requested", "starting", "running", "stopped", "deleting"]
    grid = Table(title=f"vcycle demo, {elapsed:4.0f}s: space {SPACE} ({space.get('processors_held', 0)}/6 processors)")
    grid.add_column("machinetype", no_wrap=True)
    for state in states:
        grid.add_column(state, justify="right")
    grid.add_column("jobs queued", justify="right")
    for mt in ("alpha", "beta"):
        grid.add_row(mt, *(str(counts.get(mt, {}).get(s, 0)) for s in states), str(batch.idle(mt)))
    lines = [f"heartbeats received over HTTPS: {heartbeats}"]
    lines += [f"backoff {b['machinetype']} until {b['until'][11:19]}: {b['reason']}" for b in space.get("backoffs", [])]
    return Group(grid, Text("\n".join(lines + notes[-4:])))


def heartbeats_received(api: Api) -> int:
    found = re.search(r"^vcycle_heartbeats_received_total ([0-9.e+]+)$", api.get("/metrics"), re.M)
    return int(float(found.group(1))) if found else 0


def stray_processes(directory: str) -> list[int]:
    """Processes still running from the demo's machine directories."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/cwd").startswith(os.path.join(directory, "local")):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cleanup(directory: str, daemon: subprocess.Popen[bytes] | None, console: Console) -> None:
    """Stop the daemon, then any machine still running (as vcycle would delete it)."""
    if daemon is not None and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
    from vcycle.connectors.local import LocalConnector

    local = LocalConnector(SPACE, os.path.join(directory, "local", SPACE), grace_seconds=3)
    left = local.list_machines()
    for machine in left:
        local.delete_machine(machine.id)
    if left:
        console.print(f"stopped {len(left)} machine(s) still running")


def summary(api: Api, heartbeats: int, reasons: collections.Counter[str], console: Console, directory: str,
            port: int) -> None:
    machines = api.get(f"/api/v1/machines?space={SPACE}")["machines"]
    by_type: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for m in machines:
        code = m["shutdown_code"]
        outcome = ("finished" if code is not None and code < 300 else "aborted" if code is not None and code < 700
                   else m["state"])
        by_type[m["machinetype"]][outcome] += 1
    console.print()
    console.rule("summary")
    for mt, counts in sorted(by_type.items()):
        console.print(f"{mt}: {sum(counts.values())} machines created: " +
                      ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    console.print(f"heartbeats received over HTTPS: {heartbeats}")
    console.print("decisions and their reasons (how often):")
    for reason, count in reasons.most_common(12):
        console.print(f"  {count:3d} x {reason}", markup=False, soft_wrap=True)
    aborted = next((m for m in machines if m["machinetype"] == "beta" and m["shutdown_code"]), None)
    if aborted is not None:
        console.print(f"one machine's history ({aborted['name']}):")
        for change in api.get(f"/api/v1/machines/{SPACE}/{aborted['name']}/history")["history"]:
            console.print(f"  {change['at'][11:19]} {change['state']:<10} {change['reason']}", markup=False,
                          soft_wrap=True)
    console.rule("where to look next")
    vcycle = os.path.join(os.path.dirname(sys.executable), "vcycle")
    console.print(f"  {vcycle} status --config {directory}/vcycle.conf", markup=False, soft_wrap=True)
    console.print(f"  {vcycle} machines list --config {directory}/vcycle.conf", markup=False, soft_wrap=True)
    console.print(f"  {vcycle} serve --config {directory}/vcycle.conf   then https://127.0.0.1:{port}/api/v1/status "
                  f"(CA: {directory}/pki/ca.pem)", markup=False, soft_wrap=True)
    console.print(f"  state: {directory}/state.db  log: {directory}/vcycle.log  joboutputs: {directory}/joboutputs",
                  markup=False, soft_wrap=True)


def _reason_key(decision: dict[str, Any]) -> str:
    who = decision["machinetype"] or "space"
    reason = re.sub(r"vcycle-[a-z0-9-]+", "MACHINE", decision["reason"])
    reason = re.sub(r"\d+(\.\d+)?", "N", reason)
    return f"{decision['action']} {who}: {reason}"


def run(args: argparse.Namespace, console: Console) -> int:
    directory = args.keep or tempfile.mkdtemp(prefix="vcycle-demo-")
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    make_server_pki(os.path.join(directory, "pki"))
    with open(os.path.join(directory, "vcycle.conf"), "w") as stream:
        stream.write(CONFIG.format(dir=directory, port=port, space=SPACE, cycle=args.cycle_seconds,
                                   job=args.job_seconds, backoff=max(10, int(args.seconds * 0.4))))
    batch = Batch(directory)
    batch.submit("alpha", 12)
    batch.submit("beta", 4)
    batch.publish()
    console.print(f"demo directory {directory}; the daemon's endpoint: https://127.0.0.1:{port}")
    daemon = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config",
                               os.path.join(directory, "vcycle.conf"), "--log-file",
                               os.path.join(directory, "vcycle.log")], stdout=subprocess.DEVNULL)
    api = Api(port, os.path.join(directory, "pki", "ca.pem"))
    reasons: collections.Counter[str] = collections.Counter()
    seen_reports: set[str] = set()
    notes: list[str] = []
    heartbeats = 0
    started = time.monotonic()
    phases = [(0.35, "the batch system submits 8 more alpha jobs", lambda: batch.submit("alpha", 8)),
              (0.6, "beta's jobs are cancelled: its demand falls to 0", lambda: batch.cancel("beta"))]
    try:
        with Live(console=console, refresh_per_second=4, transient=not args.live) as live:
            while True:
                elapsed = time.monotonic() - started
                while phases and elapsed >= phases[0][0] * args.seconds:
                    _, note, act = phases.pop(0)
                    act()
                    notes.append(f"{elapsed:4.0f}s {note}")
                batch.publish()
                if daemon.poll() is not None:
                    console.print(f"the daemon stopped unexpectedly; see {directory}/vcycle.log")
                    return 1
                try:
                    status = api.get("/api/v1/status")
                    heartbeats = heartbeats_received(api)
                except OSError:
                    time.sleep(0.5)
                    continue
                report = status["spaces"].get(SPACE, {}).get("last_cycle")
                if report and report["finished_at"] not in seen_reports:
                    seen_reports.add(report["finished_at"])
                    reasons.update(_reason_key(d) for d in report["decisions"])
                if args.live:
                    live.update(table(status, batch, heartbeats, elapsed, notes))
                counts = status["spaces"].get(SPACE, {}).get("machinetypes", {})
                live_machines = sum(n for c in counts.values() for s, n in c.items() if s not in ("gone",))
                if not phases and batch.idle("alpha") == 0 and live_machines == 0 and seen_reports:
                    break  # the queue drained and every machine is gone
                if elapsed > args.seconds * 3:
                    notes.append("time is up")
                    break
                time.sleep(0.5)
        summary(api, heartbeats, reasons, console, directory, port)
        return 0
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything the demo started")
        return 130
    finally:
        cleanup(directory, daemon, console)
        left = stray_processes(directory)
        if left:
            console.print(f"warning: processes still running from the demo: {left}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vcycle's demo: a local space, the daemon and its HTTPS endpoint")
    parser.add_argument("--seconds", type=float, default=60, help="the length of the scripted scenario")
    parser.add_argument("--cycle-seconds", type=int, default=3)
    parser.add_argument("--job-seconds", type=int, default=4, help="how long each simulated job runs")
    parser.add_argument("--keep", metavar="DIR", help="put the demo's files here (default: a new temporary dir)")
    parser.add_argument("--no-live", dest="live", action="store_false", help="no live table (for logs and tests)")
    args = parser.parse_args(argv)
    return run(args, Console())


if __name__ == "__main__":
    sys.exit(main())
