"""The connector contract: every connector, fake or real, passes these tests.

A test module subclasses ``ConnectorContract`` and provides the fixtures
``connector`` (a fresh, empty space), ``spec_defaults`` (what its specs need: a flavor, an image, a space)
and ``cloud_tweak`` (how to make the
cloud show each of the connector's own states), plus ``state_row`` over its
``STATE_ROWS``: (raw state words, the CloudStatus the connector must map them
to). The cases hold every connector to what the executor relies on: a retried
create makes no second machine and a clashing name is refused, a delete goes
by the cloud's id, user-data is fitted by the one helper or refused before any
machine appears.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vcycle.connectors.base import Connector, fit_user_data
from vcycle.core.model import CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.errors import LaunchRejected

# what every spec of the running suite has beside these (a flavor, an image, a space): its spec_defaults
DEFAULTS: dict[str, Any] = {}


def spec(name: str = "vcycle-mt-contract01", request: str = "req-contract-01", processors: int = 1,
         user_data: bytes = b"#!/bin/sh\nsleep 60\n", **extra: Any) -> LaunchSpec:
    extra = {**DEFAULTS, **extra}
    return LaunchSpec(name=name, request_id=request, space=extra.pop("space", "contract"), machinetype="mt",
                      manager="mgr",
                      processors=processors, flavor=extra.pop("flavor", None), zone=extra.pop("zone", None),
                      image=extra.pop("image", None), user_data=user_data,
                      shutdown_at=extra.pop("shutdown_at", datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=1)),
                      **extra)


def by_name(connector: Connector) -> dict[str, CloudMachine]:
    return {m.name: m for m in connector.list_machines()}


def going(connector: Connector, name: str, within: float = 10.0) -> CloudMachine | None:
    """The machine ``name`` as listed once it shows as deleting or deleted (or is gone), or as last listed
    after ``within`` seconds. A cloud's delete is asynchronous: Nova answers 204 before its conductor has
    caught a server still leaving the scheduler, and for that moment the listing shows it building."""
    deadline = time.monotonic() + within
    while True:
        listed = by_name(connector).get(name)
        if listed is None or listed.status in (CloudStatus.DELETING, CloudStatus.DELETED):
            return listed
        if time.monotonic() >= deadline:
            return listed
        time.sleep(0.2)


class ConnectorContract:
    """Subclass me with the fixtures described above."""

    @pytest.fixture
    def spec_defaults(self) -> dict[str, Any]:
        """What every spec of the suite has: a cloud's flavor and image, the connector's space. Override me."""
        return {}

    @pytest.fixture(autouse=True)
    def _spec_defaults(self, monkeypatch: pytest.MonkeyPatch, spec_defaults: dict[str, Any]) -> None:
        monkeypatch.setattr(sys.modules[__name__], "DEFAULTS", spec_defaults)

    def test_created_machine_is_listed_with_its_owner_tags(self, connector: Connector) -> None:
        made = connector.create_machine(spec())
        listed = by_name(connector)["vcycle-mt-contract01"]
        assert listed.id == made.id
        assert listed.owner == OwnerTags("contract", "mt", "mgr", "req-contract-01")
        assert listed.status in (CloudStatus.STARTING, CloudStatus.RUNNING)

    def test_create_is_idempotent_on_name_and_request_id(self, connector: Connector) -> None:
        first = connector.create_machine(spec())
        second = connector.create_machine(spec())
        assert first.id == second.id
        assert [m.name for m in connector.list_machines()].count("vcycle-mt-contract01") == 1

    def test_deleted_machine_is_gone(self, connector: Connector) -> None:
        made = connector.create_machine(spec())
        connector.delete_machine(made.id)
        listed = going(connector, "vcycle-mt-contract01")
        assert listed is None or listed.status in (CloudStatus.DELETING, CloudStatus.DELETED), listed

    def test_deleting_twice_or_an_unknown_machine_is_fine(self, connector: Connector) -> None:
        made = connector.create_machine(spec())
        connector.delete_machine(made.id)
        connector.delete_machine(made.id)
        connector.delete_machine("no-such-machine-id")

    def test_several_machines_are_listed_in_one_call(self, connector: Connector) -> None:
        for i in range(3):
            connector.create_machine(spec(name=f"vcycle-mt-many{i}", request=f"req-many-{i}"))
        assert {f"vcycle-mt-many{i}" for i in range(3)} <= set(by_name(connector))

    def test_user_data_too_large_is_refused_before_any_cloud_call(self, connector: Connector) -> None:
        noise = os.urandom(connector.max_user_data_bytes * 2)  # does not compress
        with pytest.raises(LaunchRejected):
            connector.create_machine(spec(user_data=noise))
        assert "vcycle-mt-contract01" not in by_name(connector)

    def test_user_data_over_the_limit_that_fits_gzipped_is_taken(self, connector: Connector) -> None:
        """Every connector fits user-data with connectors.base.fit_user_data: gzipped, as cloud-init reads it."""
        padding = b"# a line of a long user-data, repeated to pass the cloud's limit\n"
        script = b"#!/bin/sh\n" + padding * (connector.max_user_data_bytes // len(padding) + 2) + b"sleep 60\n"
        assert len(script) > connector.max_user_data_bytes and fit_user_data(script, connector.max_user_data_bytes)
        made = connector.create_machine(spec(user_data=script))
        assert by_name(connector)["vcycle-mt-contract01"].id == made.id

    def test_a_create_with_the_name_of_another_request_is_refused(self, connector: Connector) -> None:
        first = connector.create_machine(spec())
        with pytest.raises(LaunchRejected):
            connector.create_machine(spec(request="req-someone-else"))
        listed = [m for m in connector.list_machines()
                  if m.name == "vcycle-mt-contract01" and m.status is not CloudStatus.DELETED]
        assert [(m.id, m.owner.request_id if m.owner else None) for m in listed] == [(first.id, "req-contract-01")]

    def test_delete_goes_by_the_cloud_id_only(self, connector: Connector) -> None:
        made = connector.create_machine(spec())
        if made.id != made.name:  # clouds whose ids are not the names: a name deletes nothing
            connector.delete_machine(made.name)
            assert by_name(connector)["vcycle-mt-contract01"].status in (CloudStatus.STARTING, CloudStatus.RUNNING)
        connector.delete_machine(made.id)
        listed = going(connector, "vcycle-mt-contract01")
        assert listed is None or listed.status in (CloudStatus.DELETING, CloudStatus.DELETED), listed

    def test_state_map(self, connector: Connector, cloud_tweak: Any, state_row: tuple[str, CloudStatus]) -> None:
        raw, expected = state_row
        made = connector.create_machine(spec())
        cloud_tweak(made, raw)
        assert by_name(connector)["vcycle-mt-contract01"].status is expected
