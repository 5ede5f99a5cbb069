"""One manager per SQLite file: a second `vcycle daemon` or `vcycle cycle --once` on the same SQLite store is
refused with a clear error, whatever its state_dir, and takes over once the first has stopped.

Real daemon processes, a real SQLite store, the FakeConnector kept in a JSON file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_BUSY = 3


def write_config(tmp_path: Path, name: str, store: Path) -> Path:
    state = tmp_path / name
    state.mkdir()
    path = state / "vcycle.conf"
    path.write_text(f"""[settings]
state_url = sqlite:///{store}
state_dir = {state}
manager_name = {name}
cycle_seconds = 1

[space sp]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 2

[machinetype sp mt]
user_data = pilot-container
target_share = 1
backoff_seconds = 60
fizzle_seconds = 0
""")
    return path


def vcycle(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vcycle.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_second_manager_on_one_sqlite_file_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    store = tmp_path / "shared.db"
    first, second = write_config(tmp_path, "alpha", store), write_config(tmp_path, "beta", store)
    running = subprocess.Popen([sys.executable, "-m", "vcycle.cli", "daemon", "--config", str(first)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "cloud.json").exists() and time.monotonic() < deadline:
            assert running.poll() is None, running.stderr.read() if running.stderr else ""
            time.sleep(0.2)
        assert (tmp_path / "cloud.json").exists(), "the first daemon made no machine"
        for args in (("daemon", "--cycles", "1"), ("cycle", "--once")):
            refused = vcycle(*args, "--config", str(second))
            assert refused.returncode == EXIT_BUSY, refused.stderr
            assert f"another vcycle manager (pid {running.pid}) acts on the SQLite store {store}" in refused.stderr
            assert "one manager per SQLite file" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=60)
    taken = vcycle("cycle", "--once", "--config", str(second))
    assert taken.returncode == 0, taken.stderr
