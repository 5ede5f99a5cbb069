"""The FakeConnector passes the connector contract, in memory and file-backed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from contract import ConnectorContract

from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.testing import STATE_MAP, FakeConnector

# The fake cloud's own words, as a real cloud's: each row is what the connector must make of them.
STATE_ROWS = [("booting", CloudStatus.STARTING), ("running", CloudStatus.RUNNING), ("halted", CloudStatus.STOPPED),
              ("broken", CloudStatus.FAILED), ("terminating", CloudStatus.DELETING),
              ("terminated", CloudStatus.DELETED), ("hibernating", CloudStatus.UNKNOWN)]


def test_every_word_of_the_fake_clouds_state_map_has_a_row() -> None:
    assert set(STATE_MAP) <= {word for word, _ in STATE_ROWS}


@pytest.fixture(params=["memory", "file"])
def connector(request: pytest.FixtureRequest, tmp_path: Path) -> FakeConnector:
    if request.param == "file":
        return FakeConnector(state_file=str(tmp_path / "cloud.json"))
    return FakeConnector()


@pytest.fixture
def cloud_tweak(connector: FakeConnector) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        connector.set_state(machine.name, raw)

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestFakeConnector(ConnectorContract):
    pass


def test_file_backed_cloud_outlives_the_connector(tmp_path: Path) -> None:
    from contract import spec

    path = str(tmp_path / "cloud.json")
    FakeConnector(state_file=path).create_machine(spec())
    assert [m.name for m in FakeConnector(state_file=path).list_machines()] == ["vcycle-mt-contract01"]


def test_boot_delay_quota_and_injected_failures() -> None:
    from contract import spec

    from vcycle.errors import CloudUnavailable, QuotaExceeded
    from vcycle.testing import FakeClock

    clock = FakeClock()
    cloud = FakeConnector(clock=clock, boot_seconds=60, quota_processors=2)
    cloud.create_machine(spec(processors=2))
    assert cloud.list_machines()[0].status is CloudStatus.STARTING
    clock.advance(60)
    assert cloud.list_machines()[0].status is CloudStatus.RUNNING
    with pytest.raises(QuotaExceeded, match="used 2 of 2"):
        cloud.create_machine(spec(name="vcycle-mt-more", request="r2"))
    cloud.inject("list", CloudUnavailable("503 from the API"), times=2)
    for _ in range(2):
        with pytest.raises(CloudUnavailable):
            cloud.list_machines()
    assert len(cloud.list_machines()) == 1
    assert cloud.capacity() == 2
