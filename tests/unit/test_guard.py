"""The unit layer's guard (tests/unit/conftest.py) catches each thing a unit test may not do: planted here."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from vctest import UnitViolation


def test_a_thread_is_refused() -> None:
    with pytest.raises(UnitViolation, match="thread"):
        threading.Thread(target=lambda: None).start()


def test_a_thread_pool_is_refused() -> None:
    with pytest.raises(UnitViolation, match="thread"), ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: None)


def test_a_process_is_refused() -> None:
    with pytest.raises(UnitViolation, match="process"):
        subprocess.run(["true"], check=False)


def test_a_socket_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(UnitViolation, match="socket"):
        sock.bind(("127.0.0.1", 0))


def test_a_sleep_is_refused() -> None:
    with pytest.raises(UnitViolation, match="sleep"):
        time.sleep(0)
