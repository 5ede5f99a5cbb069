"""What the project's testbeds (scripts/openstack_testbed.py, scripts/dirac_testbed.py) share: starting their
processes each in a session of its own, stopping exactly those, and running until a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def start(processes: dict[str, subprocess.Popen[bytes]], logs: Path, name: str, command: list[str], *,
          env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    """Start ``command`` as ``name`` in a new session (so its children stop with it), logging to logs/NAME.log."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        processes[name] = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                                           env=dict(env) if env is not None else None, cwd=cwd)


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop the processes, last started first, each with its whole group: SIGTERM, then SIGKILL."""
    for name in reversed(list(processes)):
        process = processes.pop(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything of the group still there
        except ProcessLookupError:
            pass


def serve_until_signal(stop_testbed: Callable[[], None]) -> None:
    """Wait for SIGINT or SIGTERM (also when started in the background), then stop; a second signal does not
    cut the stop short."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_testbed()


def wait_ready(what: str, ready: Callable[[], object], seconds: float,
               processes: Mapping[str, subprocess.Popen[bytes]], logs: Path,
               unavailable: Callable[[str], Exception]) -> None:
    """Poll ``ready()`` until it is true; ``unavailable(why)`` is raised when a process of the testbed exits
    meanwhile (with the end of its log) or after ``seconds``. A check that raises (the server not up yet) is a
    no."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                log = logs / f"{name}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise unavailable(f"{name} exited with status {process.returncode} while waiting for {what}:\n{tail}")
        try:
            if ready():
                return
        except (OSError, subprocess.SubprocessError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise unavailable(f"timed out after {seconds:.0f} s waiting for {what}")
