"""A full disk under the store: said in those words, naming the file, and the next cycle after space is freed
carries on. The disk is a real 2 MB tmpfs, filled by a file; needs root (mount)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_disk() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="vcycle-disk-"))
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], capture_output=True,
        check=False).returncode == 0
    if not mounted:
        directory.rmdir()
        pytest.skip("mounting a tmpfs needs root (and a kernel that allows it here)")
    yield directory
    subprocess.run(["umount", str(directory)], check=True)
    directory.rmdir()


def cycle(conf: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "cycle", "--config", str(conf)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_full_disk_is_called_full_and_the_cycle_after_freeing_it_goes_on(small_disk: Path,
                                                                             tmp_path: Path) -> None:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{small_disk}/state.db
state_dir = {tmp_path}
manager_name = h
max_create_fraction = 1

[space sp]
api = fake
state_file = {tmp_path}/cloud.json
processors_limit = 100

[machinetype sp mt]
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
""")
    conf_small = conf.read_text()
    conf.write_text(conf_small.replace("processors_limit = 100", "processors_limit = 10"))
    assert cycle(conf).returncode == 0
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 4096)
        except OSError:
            pass  # the disk is full
    conf.write_text(conf_small)  # 90 more machines to record: the store must grow
    done = cycle(conf)
    assert done.returncode == 1
    assert f"the disk holding {small_disk}/state.db is full (0 bytes free)" in done.stdout + done.stderr
    assert "disk I/O error" not in done.stdout + done.stderr
    filler.unlink()
    done = cycle(conf)
    assert done.returncode == 0, done.stdout + done.stderr
