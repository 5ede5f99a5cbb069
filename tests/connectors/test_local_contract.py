"""The local connector: machines as real process sessions on this host, through the connector contract."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from contract import ConnectorContract, spec

from vcycle.connectors.local import LocalConnector, session_members
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import LaunchRejected, QuotaExceeded
from vcycle.testing import wait_for

STATE_ROWS = [("running", CloudStatus.RUNNING), ("exited", CloudStatus.STOPPED), ("killed", CloudStatus.FAILED),
              ("deleting", CloudStatus.DELETING)]


def _pid(connector: LocalConnector, name: str) -> int:
    import json

    return int(json.loads((Path(connector.workdir) / name / "machine.json").read_text())["pid"])


@pytest.fixture
def connector(tmp_path: Path) -> Iterator[LocalConnector]:
    local = LocalConnector("contract", str(tmp_path / "machines"), processors_limit=64, grace_seconds=2)
    yield local
    for machine in local.list_machines():  # no process outlives a test
        local.delete_machine(machine.id)


@pytest.fixture
def cloud_tweak(connector: LocalConnector) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        pid = _pid(connector, machine.name)
        directory = Path(connector.workdir) / machine.name
        wait_for(lambda: len(session_members(pid)) >= 4)  # the wrapper, timeout, the script's shell, its sleep
        if raw == "exited":
            for member in session_members(pid):
                if member != pid:
                    with contextlib.suppress(ProcessLookupError):  # timeout may have taken its children along
                        os.kill(member, signal.SIGTERM)  # the entrypoint ends; the wrapper records its status
            wait_for(lambda: (directory / "exit-status").exists())
        elif raw == "killed":
            for member in session_members(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
            wait_for(lambda: not session_members(pid))
            connector.list_machines()  # reaps
        elif raw == "deleting":
            (directory / "deleting").touch()

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestLocalConnector(ConnectorContract):
    pass


def test_a_machine_runs_its_script_in_its_own_directory_and_session(connector: LocalConnector) -> None:
    script = b"#!/bin/sh\necho \"$VCYCLE_MACHINE $VCYCLE_PROCESSORS $JOBOUTPUTS $PWD $TMPDIR\"\n"
    made = connector.create_machine(spec(user_data=script, processors=2,
                                         metadata={"joboutputs": "https://h:1/machines/contract/m/joboutputs"}))
    directory = Path(connector.workdir) / made.name
    wait_for(lambda: (directory / "exit-status").exists())
    assert (directory / "console.log").read_text() == (
        f"{made.name} 2 https://h:1/machines/contract/m/joboutputs {directory} {directory}/tmp\n")
    listed = {m.name: m for m in connector.list_machines()}[made.name]
    assert listed.status is CloudStatus.STOPPED and listed.detail == "exited 0"


def test_the_script_part_of_a_multipart_user_data_is_run(connector: LocalConnector) -> None:
    from vcycle.userdata.multipart import combine

    data = combine(["#cloud-config\nruncmd: []\n", "#!/bin/sh\necho from the script part\n"])
    made = connector.create_machine(spec(user_data=data))
    directory = Path(connector.workdir) / made.name
    wait_for(lambda: (directory / "exit-status").exists())
    assert (directory / "console.log").read_text() == "from the script part\n"
    with pytest.raises(LaunchRejected, match="no part starting with"):
        connector.create_machine(spec(name="vcycle-mt-yaml", request="r-yaml", user_data=b"#cloud-config\n{}\n"))


def test_a_machine_cannot_outlive_its_shutdown_time(connector: LocalConnector) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    made = connector.create_machine(spec(user_data=b"#!/bin/sh\nsleep 600\n", shutdown_at=soon))
    pid = _pid(connector, made.name)
    wait_for(lambda: {m.name: m for m in connector.list_machines()}[made.name].status is CloudStatus.STOPPED, 20)
    listed = {m.name: m for m in connector.list_machines()}[made.name]
    assert listed.detail == "timed out at its shutdown time"
    wait_for(lambda: not session_members(pid), 10)  # the wrapper exits right after recording the status


def test_delete_stops_every_process_of_the_machine(connector: LocalConnector) -> None:
    made = connector.create_machine(spec(user_data=b"#!/bin/sh\nsleep 300 &\nsleep 300 &\nwait\n"))
    pid = _pid(connector, made.name)
    wait_for(lambda: len(session_members(pid)) >= 4)  # wrapper, timeout, the script, two sleeps
    connector.delete_machine(made.id)
    assert session_members(pid) == []
    assert not (Path(connector.workdir) / made.name).exists()


def test_machines_are_found_again_by_a_new_connector_and_not_started_twice(tmp_path: Path) -> None:
    first = LocalConnector("contract", str(tmp_path / "m"), processors_limit=4, grace_seconds=1)
    made = first.create_machine(spec())
    pid = _pid(first, made.name)
    again = LocalConnector("contract", str(tmp_path / "m"), processors_limit=4, grace_seconds=1)
    assert [(m.name, m.status, m.owner) for m in again.list_machines()] == [(made.name, CloudStatus.RUNNING,
                                                                              made.owner)]
    assert again.create_machine(spec()).id == made.id  # the same request: the same machine
    assert _pid(again, made.name) == pid
    again.delete_machine(made.id)
    assert session_members(pid) == []


def test_processors_limit_defaults_to_this_hosts_cores(tmp_path: Path) -> None:
    local = LocalConnector("contract", str(tmp_path / "m"), grace_seconds=1)
    assert local.capacity() == os.cpu_count()
    small = LocalConnector("contract", str(tmp_path / "s"), processors_limit=2, grace_seconds=1)
    small.create_machine(spec(processors=2))
    try:
        with pytest.raises(QuotaExceeded, match="uses 2 of 2"):
            small.create_machine(spec(name="vcycle-mt-more", request="r-more"))
    finally:
        for machine in small.list_machines():
            small.delete_machine(machine.id)


@pytest.mark.skipif(__import__("shutil").which("bwrap") is None, reason="bubblewrap is not installed")
def test_bwrap_isolation_leaves_only_the_machines_directory_writable(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    local = LocalConnector("contract", str(tmp_path / "m"), processors_limit=4, isolation="bwrap", grace_seconds=1)
    script = (f"#!/bin/sh\necho pid $$\ntouch {outside}/x 2>/dev/null && echo wrote outside || echo outside is "
              "read-only\ntouch ./mine && echo wrote its own directory\necho \"token $VCYCLE_TOKEN\"\n").encode()
    made = local.create_machine(spec(user_data=script, token="tok-123"))
    directory = Path(local.workdir) / made.name
    wait_for(lambda: (directory / "exit-status").exists())
    lines = (directory / "console.log").read_text().splitlines()
    assert lines[0] in ("pid 1", "pid 2")  # its own PID namespace
    assert lines[1:] == ["outside is read-only", "wrote its own directory", "token tok-123"]
    assert not (outside / "x").exists()
    local.delete_machine(made.id)


def test_a_drain_is_a_sigterm_to_the_entrypoint_alone_and_the_pilot_runs_on(connector: LocalConnector,
                                                                           tmp_path: Path) -> None:
    """The shipped pilot-container template on a local machine: drain_machine sends SIGTERM to its entrypoint,
    not to its pilot; the entrypoint writes VCYCLE_DRAIN_FILE, the pilot sees it, ends its work by itself, and the
    machine stops with 200 Success, its pilot never killed."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "userdata"))
    from test_render import render, site

    options = ("user_data_option_heartbeat_seconds = 1\nuser_data_option_watch_interruptions = false\n"
               "user_data_option_pilot_command = echo working; while [ ! -e \"$VCYCLE_DRAIN_FILE\" ]; do sleep 0.2; "
               "done; echo told: $(cat \"$VCYCLE_DRAIN_FILE\"); sleep 1; echo finished my job")
    text = render(site(tmp_path / "site", "pilot-container", options), token="t")
    script = text.replace("https://vcycle.example.org:8443", "https://127.0.0.1:9").encode()  # reports: refused
    made = connector.create_machine(spec(user_data=script))
    directory = Path(connector.workdir) / made.name

    def working() -> bool:
        return any("working" in log.read_text() for log in (directory / "tmp").glob("tmp.*/pilot.log"))

    wait_for(working)  # no pause: from the pilot's first line on, a SIGTERM is a drain
    connector.drain_machine(made.id)
    wait_for(lambda: (directory / "exit-status").exists(), 30)
    assert (directory / "exit-status").read_text().strip() == "0"
    assert (directory / "tmp" / "vcycle-drain").read_text() == "drain: SIGTERM from vcycle\n"
    shutdown = (directory / "tmp" / "vcycle-shutdown-message").read_text()
    assert shutdown == "200 Success\n"  # the pilot ended by itself, with 0


def test_a_drain_of_a_machine_gone_already_is_nothing(connector: LocalConnector) -> None:
    connector.drain_machine("vcycle-mt-nowhere")
