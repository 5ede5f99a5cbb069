"""``make demo``'s scenario, faster: the real daemon, its HTTPS endpoint, local machines running the
shipped pilot-container user-data with curl, and a scripted batch system; then the outcome is checked."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("timeout") is None,
                                reason="local machines need curl and coreutils' timeout (make tools installs curl)")


def test_the_demo_scenario_end_to_end(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--seconds", "20", "--cycle-seconds",
                           "1", "--job-seconds", "1", "--keep", str(directory), "--no-live"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    db = sqlite3.connect(directory / "state.db")
    machines = db.execute("SELECT machinetype, state, shutdown_code, heartbeat_at FROM machines").fetchall()
    alpha = [m for m in machines if m[0] == "alpha"]
    beta = [m for m in machines if m[0] == "beta"]
    # every machine is gone at the end; alpha's finished their jobs, beta's aborted
    assert {m[1] for m in machines} == {"gone"}
    assert len(alpha) >= 3 and all(m[2] == 200 for m in alpha)
    assert beta and all(m[2] == 500 for m in beta)
    # beta's backoff took effect: the planner held it back, with the abort as the reason
    backoff = db.execute("SELECT reason FROM backoffs WHERE machinetype = 'beta'").fetchone()
    assert backoff is not None and "Pilot failed with status 1" in backoff[0]
    assert len(beta) < 4  # four beta jobs waited, but the backoff stopped more beta machines
    # the heartbeats of every alpha machine that ran a job reached the store (one whose pilot found the queue
    # empty may end before its first heartbeat); every job was done by one machine
    beats = dict(db.execute("SELECT name, at FROM heartbeats WHERE space = 'demo.example.org'").fetchall())
    logs = sorted((directory / "joboutputs" / "demo.example.org").glob("vcycle-alpha-*/pilot.log"))
    worked = [log.parent.name for log in logs if log.read_text().strip()]
    assert worked and all(beats.get(name) for name in worked), (worked, sorted(beats))
    jobs = [line.split()[1] for log in logs for line in log.read_text().splitlines()]
    assert sorted(jobs) == [f"job-{n:03d}" for n in range(1, 21)]
    assert not (directory / "queue" / "alpha").exists() or not os.listdir(directory / "queue" / "alpha")
    # no process of any machine is left (each machine is its own session under local/)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            assert not cwd.startswith(str(directory)), f"process {entry.name} left in {cwd}"
    assert "warning: processes still running" not in done.stdout
