"""A cloud that stops answering costs its own space ``api_timeout_seconds``, and the other spaces go on.

The peer is a real TCP listener that accepts connections and never answers (a
hung endpoint, a black-holed load balancer): boto3 connects, sends, and waits.
Before calls were bounded, one such cycle took botocore's read timeout times
its attempts (153 s measured) with nothing logged.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vcycle.core.states import MachineState
from vcycle.store import Store


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # kept open, never read, never answered
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_silent_cloud_is_bounded_and_the_other_space_is_filled(silent_endpoint: str, tmp_path: Path) -> None:
    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""
[settings]
state_url = sqlite:///{tmp_path}/state.db
state_dir = {tmp_path}
manager_name = cron-host
max_create_fraction = 1

[space silent]
api = ec2
url = {silent_endpoint}
region = us-east-1
access_key = testing
secret_key = testing
api_timeout_seconds = 4
processors_limit = 4

[machinetype silent mt]
root_image = image:ami-12345678
flavor_names = t3.micro
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0

[space alive]
api = fake
processors_limit = 3

[machinetype alive mt]
user_data = pilot-container
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
""")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "-v", "cycle", "--once", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    spent = time.monotonic() - started
    assert done.returncode == 1, done.stderr  # one space failed
    assert "silent: 0 created, 0 deleted, FAILED: skipped: ec2 list_machines did not answer within 4s " \
           "(api_timeout_seconds)" in done.stdout
    assert "alive: 3 created, 0 deleted, ok" in done.stdout
    assert "space=silent skipped this cycle: ec2 list_machines did not answer within 4s" in done.stderr
    assert "Traceback" not in done.stderr
    store = Store.open(f"sqlite:///{tmp_path}/state.db", readonly=True)
    try:
        assert [r.state for r in store.load("alive").records] == [MachineState.STARTING] * 3
        assert store.load("silent").records == ()  # nothing asked of a cloud that could not be listed
    finally:
        store.close()
    print(f"cycle with a silent cloud: {spent:.1f}s (api_timeout_seconds 4)")
