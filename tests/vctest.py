"""Shared helpers for vcycle's tests (imported as vctest)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from vcycle.config import load_config
from vcycle.core.model import CloudMachine, CloudStatus, MachineRecord
from vcycle.core.sections import Config
from vcycle.core.states import MachineState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

MT_DEFAULTS = {"user_data": "ud", "target_share": 1, "backoff_seconds": 600, "fizzle_seconds": 300}
# The tests' configurations keep what vcycle writes beside its state (the APEL archive) out of /var/lib/vcycle.
STATE_DIR = tempfile.mkdtemp(prefix="vcycle-test-state-")


class UnitViolation(AssertionError):
    """A unit test started a thread or a process, opened a socket, or slept (tests/unit/conftest.py)."""


def vcycle(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``vcycle ARGS --config CONF`` run as a user runs it: its output, and never a traceback."""
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", *args, "--config", str(conf)], capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def unavailable(what: str, reason: str) -> None:
    """Skip (or, under CI=true, fail) a test whose real peer cannot run here."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} must run under CI: {reason}")
    pytest.skip(f"no {what} here: {reason}")


def config_text(
    limit: int | None = 100,
    machinetypes: Mapping[str, Mapping[str, object]] | None = None,
    space: Mapping[str, object] | None = None,
    settings: Mapping[str, object] | None = None,
    extra: str = "",
) -> str:
    """INI text: [settings] manager_name=mgr, a fake space 'sp', and its machinetypes."""
    settings = {"state_dir": STATE_DIR, **(settings or {})}
    lines = ["[settings]", "manager_name = mgr", *(f"{k} = {v}" for k, v in settings.items())]
    lines += ["[space sp]", "api = fake"]
    if limit is not None:
        lines.append(f"processors_limit = {limit}")
    lines += [f"{k} = {v}" for k, v in (space or {}).items()]
    for name, keys in (machinetypes if machinetypes is not None else {"mt": {}}).items():
        lines.append(f"[machinetype sp {name}]")
        lines += [f"{k} = {v}" for k, v in {**MT_DEFAULTS, **keys}.items()]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


def load_text(text: str) -> Config:
    """Load INI text through a temporary file, as a site's file would be."""
    fd, path = tempfile.mkstemp(suffix=".conf")
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        return load_config([path], hostname="testhost")
    finally:
        os.unlink(path)


def make_config(**kwargs: object) -> Config:
    return load_text(config_text(**kwargs))  # type: ignore[arg-type]


def rec(name: str, state: MachineState, *, mt: str = "mt", processors: int = 1, created: datetime = T0,
        **extra: object) -> MachineRecord:
    """A record in ``state`` created at ``created`` (history: one entry)."""
    from vcycle.core.model import StatusChange

    return MachineRecord(name=name, space="sp", machinetype=mt, state=state, processors=processors,
                         created_at=created, request_id="req-" + name, manager="mgr",
                         last=StatusChange(state, created, "test"), **extra)  # type: ignore[arg-type]


def cloud(name: str, status: CloudStatus, *, mt: str = "mt", processors: int | None = 1, manager: str = "mgr",
          space: str = "sp", owned: bool = True, detail: str = "") -> CloudMachine:
    """A cloud machine, tagged as ours unless ``owned`` is False."""
    from vcycle.core.model import OwnerTags

    owner = OwnerTags(space, mt, manager, "req-" + name) if owned else None
    return CloudMachine(id="id-" + name, name=name, status=status, owner=owner, processors=processors,
                        created_at=T0, detail=detail)


def plain_render(space: object, mt: object, name: str, order: object, request: str, token: str) -> bytes:
    """A renderer for tests that do not look at user-data: a script naming the machine."""
    return f"#!/bin/sh\necho {name}\n".encode()
