"""``vcycle cycle --once`` with an HTCondor demand, as cron runs it: real processes, the fake cloud in a state
file, and ``condor_q``/``condor_status`` stand-ins on PATH answering from the -json fixtures (no HTCondor
daemon can run here; see tests/fakecondor.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fakecondor import write_tools

from vcycle.testing import FakeConnector

CONF = """
[settings]
state_url = sqlite:///{d}/state.db
state_dir = {d}
manager_name = e2e
max_create_fraction = 1

[demand pool]
type = htcondor
method = {method}
collector = cm.example.org:9618

[space grid]
api = fake
state_file = {d}/cloud.json
processors_limit = 100

[machinetype grid atlas]
user_data = htcondor-startd
user_data_option_condor_host = cm.example.org
target_share = 1
min_processors = 8
mb_per_processor = 2000
backoff_seconds = 0
fizzle_seconds = 0
demand = pool
htcondor_constraint = x509UserProxyVOName == "atlas"
"""


def cycle(conf: Path, path: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "cycle", "--once", "--config", str(conf)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_idle_jobs_become_machines_and_an_unreachable_pool_creates_nothing(tmp_path: Path) -> None:
    write_tools(tmp_path / "bin")
    write_tools(tmp_path / "down", down=True)
    conf = tmp_path / "vcycle.conf"
    conf.write_text(CONF.format(d=tmp_path, method="commands"))
    done = cycle(conf, str(tmp_path / "down") + ":" + os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    assert "demand=pool unknown, nothing is created for atlas" in done.stderr
    assert "condor_status exited with status 1" in done.stderr
    cloud = FakeConnector(state_file=str(tmp_path / "cloud.json"))
    assert cloud.ours() == []
    done = cycle(conf, str(tmp_path / "bin") + ":" + os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    # atlas's idle jobs: two 1-core 2000 MB, one 8-core 16000 MB, one 1-core 1500 MB, and one of 64 cores that
    # no 8-core machine can hold: the 8-core job takes a machine, the three small ones share another
    assert len(cloud.ours()) == 2 and all(m.processors == 8 for m in cloud.ours())
    status = subprocess.run([sys.executable, "-m", "vcycle.cli", "status", "--config", str(conf)],
                            capture_output=True, text=True, timeout=60)
    assert "1 idle jobs ask for more than one 8-processor machine" in status.stdout
