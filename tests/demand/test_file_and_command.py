"""The file and command demand sources: good documents become Demand, bad ones DemandError."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vcycle.core.model import Demand
from vcycle.core.sections import DemandConfig
from vcycle.demand import make_source
from vcycle.demand.command import CommandSection
from vcycle.demand.file import FileSection
from vcycle.errors import DemandError

DOC = {"sp": {"mt": {"idle_jobs": 7, "running_jobs": 2}, "other": {"idle_jobs": 0}}}


def file_source(path: Path):  # type: ignore[no-untyped-def]
    return make_source(DemandConfig(name="q", type="file", options=FileSection(path=str(path)), file="x.conf"))


def test_file_source_reads_the_document_each_call(tmp_path: Path) -> None:
    path = tmp_path / "demand.json"
    path.write_text(json.dumps(DOC))
    source = file_source(path)
    assert source.demand("sp") == {"mt": Demand(7, 2), "other": Demand(0, 0)}
    assert source.demand("nowhere") == {}
    path.write_text(json.dumps({"sp": {"mt": {"idle_jobs": 1}}}))
    assert source.demand("sp") == {"mt": Demand(1, 0)}


def test_with_poll_seconds_a_rise_in_idle_jobs_wakes_the_daemon_between_cycles(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "demand.json"
    path.write_text(json.dumps(DOC))
    source = make_source(DemandConfig(name="q", type="file", file="x.conf",
                                      options=FileSection(path=str(path), poll_seconds=0.5)))
    woken = threading.Event()
    source.watch(woken.set)  # type: ignore[attr-defined]
    try:
        source.demand("sp")  # the first demand starts the watch
        assert woken.wait(5)  # its first look: the counts rose from nothing
        woken.clear()
        assert not woken.wait(1.5)  # unchanged: no wake
        path.write_text(json.dumps({"sp": {"mt": {"idle_jobs": 70}}}))
        assert woken.wait(5)  # 7 -> 70 idle jobs: a cycle now
        woken.clear()
        path.write_text(json.dumps({"sp": {"mt": {"idle_jobs": 3}}}))
        assert not woken.wait(1.5)  # fewer: nothing to hurry for
    finally:
        source.close()  # type: ignore[attr-defined]


def test_without_poll_seconds_nothing_is_watched(tmp_path: Path) -> None:
    path = tmp_path / "demand.json"
    path.write_text(json.dumps(DOC))
    source = file_source(path)
    source.watch(lambda: None)  # type: ignore[attr-defined]
    source.demand("sp")
    assert source.watcher is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "cannot read"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object of spaces"),
    ('{"sp": 3}', "expected an object of machinetypes"),
    ('{"sp": {"mt": {"idle_jobs": -1}}}', "idle_jobs must be a whole number >= 0"),
    ('{"sp": {"mt": {"idle_jobs": true}}}', "idle_jobs must be a whole number >= 0"),
    ('{"sp": {"mt": {"running_jobs": 1.5}}}', "running_jobs must be a whole number >= 0"),
])
def test_file_source_bad_input_is_a_demand_error(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "demand.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DemandError, match=r"demand\.json|demand q") as caught:
        file_source(path).demand("sp")
    assert fragment in str(caught.value)


def command_source(script: str, timeout: int = 10):  # type: ignore[no-untyped-def]
    command = f"{sys.executable} -c '{script}'"
    return make_source(DemandConfig(name="cmd", type="command",
                                    options=CommandSection(command=command, timeout_seconds=timeout), file="x.conf"))


def test_command_source_parses_the_program_output() -> None:
    source = command_source('import json; print(json.dumps({"sp": {"mt": {"idle_jobs": 3}}}))')
    assert source.demand("sp") == {"mt": Demand(3, 0)}


@pytest.mark.parametrize(("script", "fragment"), [
    ('import sys; sys.stderr.write("no collector\\n"); sys.exit(3)', "exit status 3: no collector"),
    ('print("hello")', "output is not valid JSON"),
    ("import time; time.sleep(5)", "no answer within 1s"),
])
def test_command_source_failures_are_demand_errors(script: str, fragment: str) -> None:
    with pytest.raises(DemandError) as caught:
        command_source(script, timeout=1).demand("sp")
    assert fragment in str(caught.value)


def test_command_that_cannot_run_is_a_demand_error() -> None:
    source = make_source(DemandConfig(name="cmd", type="command",
                                      options=CommandSection(command="/no/such/program", timeout_seconds=1), file="x"))
    with pytest.raises(DemandError, match="cannot run"):
        source.demand("sp")
