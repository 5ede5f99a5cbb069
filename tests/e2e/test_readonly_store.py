"""The commands that only read work on a store this user cannot write, and write nothing; the others say so.

The tests run as root, whom file modes do not stop; the commands are run
through ``setpriv`` with every capability dropped, so that root is held to
the modes like any user (the interpreter under /root stays reachable).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to drop the capabilities that ignore file modes")

UNPRIVILEGED = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


@pytest.fixture
def site() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="vcycle-ro-"))
    conf = directory / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{directory}/state/state.db
state_dir = {directory}
manager_name = h
max_create_fraction = 1

[space sp]
api = fake
state_file = {directory}/cloud.json
processors_limit = 2

[machinetype sp mt]
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
""")
    run(conf, "cycle")
    yield conf
    os.chmod(directory / "state", 0o755)
    shutil.rmtree(directory)


def run(conf: Path, *argv: str, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = UNPRIVILEGED if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "vcycle.cli", *argv, "--config", str(conf)],
                          capture_output=True, text=True, timeout=120, check=False)


def lock_down(state: Path, files: int, directory: int) -> set[str]:
    for path in state.iterdir():
        os.chmod(path, files)
    os.chmod(state, directory)
    return {p.name for p in state.iterdir()}


@pytest.mark.parametrize("argv", [("status",), ("machines", "list"), ("machines", "history", "--space", "sp"),
                                  ("plan",)])
def test_reading_commands_work_on_a_read_only_store_and_write_nothing(site: Path, argv: tuple[str, ...]) -> None:
    state = site.parent / "state"
    before = lock_down(state, 0o444, 0o555)
    assert before == {"state.db", "state.db.writelock", "state.db.manager"}  # the writer left no -wal or -shm
    if argv[:2] == ("machines", "history"):
        listed = run(site, "machines", "list", unprivileged=True).stdout.splitlines()
        argv = ("machines", "history", listed[1].split("\t")[2])
    done = run(site, *argv, unprivileged=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert {p.name for p in state.iterdir()} == before  # no -shm, no -wal, no lock


def test_a_writing_command_on_a_read_only_store_names_the_file_and_leaves_nothing(site: Path) -> None:
    state = site.parent / "state"
    before = lock_down(state, 0o444, 0o755)  # the directory writable: SQLite would make a -shm of mode 0444
    done = run(site, "cycle", unprivileged=True)
    assert done.returncode == 1
    assert f"the state store {state}/state.db is read-only for this user" in done.stderr
    assert "Traceback" not in done.stderr
    assert {p.name for p in state.iterdir()} == before
    for path in state.iterdir():
        os.chmod(path, 0o644)
    assert run(site, "cycle", unprivileged=True).returncode == 0  # nothing left behind stops the next run
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o200 for p in state.iterdir())
