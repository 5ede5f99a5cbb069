"""Several real `vcycle daemon` processes on one real PostgreSQL, with EC2 spaces on moto's server: the harness of
tests/e2e/test_managers.py and benchmarks/ha.py.

What each manager does is counted at the other end of the wire, never from its own word:

- cloud calls: every manager reaches moto through a counting proxy here, its own label and the space in the
  URL path (``url = http://PROXY/LABEL/SPACE``); the proxy notes (time, manager, space, EC2 action);
- store writes: a trigger on the ``spaces`` table (a space's version is raised by every write for it) notes the
  writer's ``application_name``, which each manager's state_url sets to its label, and the database's time;
- ownership: the leases and lease_changes tables.

A call or write is *fenced* when its manager did not hold the space's lease at that moment: from its claim to
the next claim of that space by anyone (a released lease counted as still held, so this errs toward fewer).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from sqlalchemy import create_engine, text

from vcycle.store import Store

AUDIT = """
CREATE TABLE audit_writes (manager TEXT, space TEXT, version INTEGER, at DOUBLE PRECISION);
CREATE FUNCTION audit_write() RETURNS trigger AS $$
BEGIN
  INSERT INTO audit_writes VALUES (current_setting('application_name'), NEW.name, NEW.version,
                                   extract(epoch from clock_timestamp()));
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_write AFTER UPDATE OF version ON spaces FOR EACH ROW EXECUTE FUNCTION audit_write();
"""


class Proxy:
    """A reverse proxy to moto that notes every request: (time, manager, space, action)."""

    def __init__(self, moto_url: str) -> None:
        target = urlsplit(moto_url)
        self.calls: list[tuple[float, str, str, str]] = []
        lock = threading.Lock()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                parts = self.path.split("/", 3)
                manager, space = (parts[1], parts[2]) if len(parts) > 2 else ("", "")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = re.search(rb"Action=(\w+)", body)
                with lock:
                    calls.append((time.time(), manager, space, action.group(1).decode() if action else ""))
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                connection.request(self.command, "/" + (parts[3] if len(parts) > 3 else ""), body, headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the manager was killed while it waited: the call was counted, nobody reads the answer
                finally:
                    connection.close()

            do_POST = do_GET = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


CONFIG = """[settings]
state_url = {db}?application_name={label}
state_dir = {state}
manager_name = ha
cycle_seconds = {cycle}
lease_seconds = {lease}
lease_renew_seconds = {renew}
max_create_fraction = 1
request_timeout_seconds = 60

[demand queue]
type = file
path = {demand}
"""

SPACE = """
[space {space}]
api = ec2
url = http://127.0.0.1:{port}/{label}/{space}
region = us-east-1
access_key = testing
secret_key = testing
processors_limit = {limit}
api_timeout_seconds = 20

[machinetype {space} pilot]
root_image = image:{ami}
flavor_names = t3.micro
min_processors = 2
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
user_data = pilot-container
demand = queue
jobs_per_machine = 1
max_wallclock_seconds = {wallclock}
"""


@dataclass
class Manager:
    label: str
    conf: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)  # every process it ran as, for its holder names

    def start(self) -> None:
        with open(self.log.with_suffix(".err"), "ab") as errors:  # what it says when it cannot start
            self.process = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config",
                                             str(self.conf), "--log-file", str(self.log)],
                                            stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        self.pids.append(self.process.pid)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


class Site:
    """Managers, spaces and their counters; ``close()`` stops everything."""

    def __init__(self, root: Path, database: str, moto_url: str, ami: str, *, managers: int = 3, spaces: int = 20,
                 lease: float = 15.0, renew: float = 5.0, cycle: int = 2, limit: int = 4, idle: int = 2,
                 wallclock: int = 86400) -> None:
        self.root, self.database, self.moto_url = root, database, moto_url
        self.lease = lease
        store = Store.open(database)  # migrated before any manager starts, so that the trigger has its table
        store.close()
        self.engine = create_engine(database, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        with self.engine.begin() as c:
            c.execute(text(AUDIT))
        self.proxy = Proxy(moto_url)
        tag = uuid.uuid4().hex[:6]
        self.spaces = [f"ha{tag}-{i:02d}" for i in range(spaces)]
        demand = root / "demand.json"
        demand.write_text(json.dumps({s: {"pilot": {"idle_jobs": idle, "running_jobs": 0}} for s in self.spaces}))
        self.managers: list[Manager] = []
        for index in range(managers):
            label = f"m{index + 1}"
            state = root / label
            state.mkdir()
            body = CONFIG.format(db=database, label=label, state=state, cycle=cycle, lease=lease, renew=renew,
                                 demand=demand)
            body += "".join(SPACE.format(space=s, port=self.proxy.port, label=label, limit=limit, ami=ami,
                                         wallclock=wallclock) for s in self.spaces)
            conf = state / "vcycle.conf"
            conf.write_text(body)
            self.managers.append(Manager(label, conf, state / "vcycle.log"))
        self.ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")
        self.limit_machines = limit // 2
        self.breaches = 0
        self._sampling = False

    def start(self) -> None:
        for manager in self.managers:
            manager.start()

    def close(self) -> None:
        self._sampling = False
        for manager in self.managers:
            if manager.alive:
                try:
                    os.killpg(manager.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
                    manager.signal(signal.SIGTERM)
                    manager.wait(30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(manager.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                    manager.wait(10)
        self.proxy.close()
        self.engine.dispose()
        self.terminate_all()

    def terminate_all(self) -> None:
        ids = [i["InstanceId"] for i in self.instances()]
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)

    # --- what the store says -------------------------------------------------------------

    def label_of(self, holder: str) -> str:
        pid = int(holder.rsplit(":", 1)[1]) if ":" in holder else -1
        for manager in self.managers:
            if pid in manager.pids:
                return manager.label
        return holder

    def leases(self) -> dict[str, tuple[str, int, float, float]]:
        """space -> (manager label, epoch, expires, database now)."""
        with self.engine.connect() as c:
            now = c.execute(text("SELECT extract(epoch from clock_timestamp())::float")).scalar_one()
            rows = c.execute(text("SELECT space, holder, epoch, expires FROM leases")).all()
        return {r.space: (self.label_of(r.holder), r.epoch, r.expires, now) for r in rows if r.space in self.spaces}

    def holders(self) -> dict[str, str]:
        """space -> its live holder's own name (MANAGER@HOST:PID), told apart from a restarted one's."""
        with self.engine.connect() as c:
            rows = c.execute(text("SELECT space, holder FROM leases WHERE expires > "
                                  "extract(epoch from clock_timestamp())")).all()
        return {r.space: r.holder for r in rows if r.space in self.spaces}

    def held_by(self) -> dict[str, str]:
        """space -> label of its live holder."""
        return {s: who for s, (who, _, expires, now) in self.leases().items() if expires > now}

    def claims(self) -> list[tuple[str, int, str, str, bool, float]]:
        """(space, epoch, holder label, previous label, taken over, at) oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(text("SELECT space, epoch, holder, previous, taken_over, at FROM lease_changes "
                                  "ORDER BY at")).all()
        return [(r.space, r.epoch, self.label_of(r.holder), self.label_of(r.previous) if r.previous else "",
                 r.taken_over, r.at) for r in rows if r.space in self.spaces]

    def writes(self) -> list[tuple[float, str, str]]:
        with self.engine.connect() as c:
            rows = c.execute(text("SELECT at, manager, space FROM audit_writes ORDER BY at")).all()
        return [(r.at, r.manager, r.space) for r in rows if r.space in self.spaces]

    def records(self) -> dict[str, set[str]]:
        """space -> names of its machines the store has not seen gone."""
        with self.engine.connect() as c:
            rows = c.execute(text("SELECT space, name FROM machines WHERE state <> 'gone'")).all()
        found: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            found[r.space].add(r.name)
        return found

    # --- what the cloud says -------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            {"Name": "tag:vcycle-manager", "Values": ["ha"]}])
        found = [i for p in pages for r in p["Reservations"] for i in r["Instances"]]
        return [i for i in found if self.space_of(i) in self.spaces]

    @staticmethod
    def tag(instance: dict[str, Any], key: str) -> str:
        return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), "")

    def space_of(self, instance: dict[str, Any]) -> str:
        return self.tag(instance, "vcycle-space")

    def double_creates(self) -> int:
        """Intents (machine names) with more than one instance, ever: terminated ones count too."""
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:vcycle-manager", "Values": ["ha"]}])
        names = Counter(self.tag(i, "Name") for p in pages for r in p["Reservations"] for i in r["Instances"]
                        if self.space_of(i) in self.spaces)
        return sum(n - 1 for n in names.values() if n > 1)

    def sample_limits(self, period: float = 1.0) -> threading.Thread:
        """Count, every ``period``, the spaces with more live instances than their limit allows."""
        self._sampling = True

        def run() -> None:
            while self._sampling:
                try:
                    per = Counter(self.space_of(i) for i in self.instances())
                    self.breaches += sum(1 for n in per.values() if n > self.limit_machines)
                except Exception:  # noqa: BLE001  (the cloud busy for a moment: the next sample counts)
                    pass
                time.sleep(period)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def sample_owners(self, period: float = 0.1) -> threading.Thread:
        """Every ``period``: which spaces had no live lease (``gaps``), and the longest such spell per space."""
        self._sampling = True
        self.samples = 0
        self.gap_samples = 0
        self.longest_gap = 0.0
        since: dict[str, float] = {}

        def run() -> None:
            while self._sampling:
                try:
                    held = self.held_by()
                except Exception:  # noqa: BLE001  (PostgreSQL restarted under us: no sample)
                    time.sleep(period)
                    continue
                now = time.monotonic()
                self.samples += 1
                free = [s for s in self.spaces if s not in held]
                self.gap_samples += bool(free)
                for space in self.spaces:
                    if space in held:
                        since.pop(space, None)
                    else:
                        self.longest_gap = max(self.longest_gap, now - since.setdefault(space, now))
                time.sleep(period)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def leaked(self) -> list[str]:
        """Live instances with no live record in the store."""
        records = self.records()
        return [self.tag(i, "Name") for i in self.instances()
                if self.tag(i, "Name") not in records.get(self.space_of(i), set())]

    # --- fencing ---------------------------------------------------------------------------

    def fenced(self) -> tuple[list[tuple[float, str, str, str]], list[tuple[float, str, str]]]:
        """The cloud calls and store writes made by a manager that did not hold the space then."""
        spans: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for space, _, holder, _, _, at in self.claims():
            spans[space].append((at, holder))

        def holder(space: str, at: float) -> str | None:
            found = None
            for start, who in spans.get(space, []):
                if start <= at:
                    found = who
            return found
        calls = [c for c in self.proxy.calls if c[2] in self.spaces and holder(c[2], c[0]) != c[1]]
        writes = [w for w in self.writes() if holder(w[2], w[0]) != w[1]]
        return calls, writes

    def wait_for(self, what: Any, timeout: float, step: float = 0.1) -> float:
        """Seconds until ``what()`` is true; AssertionError after ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if what():
                return time.monotonic() - started
            time.sleep(step)
        raise AssertionError(f"not within {timeout:g}s")

    def settled(self) -> bool:
        """Every space held by a live manager."""
        held = self.held_by()
        alive = {m.label for m in self.managers if m.alive}
        return all(held.get(s) in alive for s in self.spaces)

    def pick(self, rng: random.Random) -> Manager:
        return rng.choice([m for m in self.managers if m.alive])
