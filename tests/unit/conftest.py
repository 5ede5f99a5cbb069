"""Unit tests run without threads, processes, sockets or sleeps: each of those raises UnitViolation here.

Tests that need any of them belong to the layer they exercise (tests/loop, tests/demand, tests/cli,
tests/userdata, tests/connectors, tests/web, tests/e2e). tests/unit/test_guard.py plants each violation and
shows that it is caught.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from vctest import UnitViolation


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise UnitViolation(f"a unit test may not {what}: move the test to the layer it exercises")

    return refused


@pytest.fixture(autouse=True)
def no_threads_processes_sockets_or_sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(threading.Thread, "start", _refuse("start a thread"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    for method in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, method, _refuse("use a socket"))
    monkeypatch.setattr(time, "sleep", _refuse("sleep"))
    yield
