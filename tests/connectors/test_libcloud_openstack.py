"""The libcloud connector through libcloud's own OpenStack driver against the project's real OpenStack
(scripts/openstack_testbed.py: Keystone, Glance, Placement, Neutron's API and Nova with its fake virt driver):
the same contract as the native connectors, ownership by server metadata."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from contract import ConnectorContract
from test_openstack_contract import clean

from vcycle.connectors.libcloud import LibcloudConnector, LibcloudSpace, make_driver
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.testing import wait_for

STATE_ROWS = [("ACTIVE", CloudStatus.RUNNING), ("SHUTOFF", CloudStatus.STOPPED), ("ERROR", CloudStatus.FAILED)]


def keys(testbed: Any) -> LibcloudSpace:
    found = testbed.space_keys()
    url = urlsplit(found["url"])
    return LibcloudSpace(driver="openstack", key=found["username"],
                         secret=base64.b64decode(found["password_base64"]).decode(),
                         ex_force_auth_url=f"{url.scheme}://{url.netloc}", ex_force_auth_version="3.x_password",
                         ex_tenant_name=found["project_name"], ex_domain_name=found["domain_name"],
                         ex_force_service_region="RegionOne")


@pytest.fixture
def connector(openstack_testbed: Any) -> Iterator[LibcloudConnector]:
    clean(openstack_testbed)
    yield LibcloudConnector(make_driver(keys(openstack_testbed), 60), "openstack", "contract", "mgr")
    clean(openstack_testbed)


@pytest.fixture
def cloud_tweak(openstack_testbed: Any) -> Any:
    admin = openstack_testbed.connection(admin=True)

    def tweak(machine: CloudMachine, raw: str) -> None:
        wait_for(lambda: admin.compute.get_server(machine.id).status == "ACTIVE")
        if raw == "SHUTOFF":
            admin.compute.stop_server(machine.id)
        elif raw == "ERROR":
            admin.compute.reset_server_state(machine.id, "error")
        wait_for(lambda: admin.compute.get_server(machine.id).status == raw)

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestLibcloudOpenStack(ConnectorContract):
    """The contract, with an image and a size the testbed has."""

    @pytest.fixture
    def spec_defaults(self) -> dict[str, Any]:
        return {"flavor": "m1.small", "image": "image:cernvm-test"}


def test_metadata_and_user_data_reach_the_server(connector: LibcloudConnector, openstack_testbed: Any) -> None:
    import contract

    made = connector.create_machine(contract.spec(flavor="m1.small", image="image:cernvm-test",
                                                  user_data=b"#!/bin/sh\necho pilot\n"))
    server = openstack_testbed.connection(admin=True).compute.get_server(made.id)
    assert server.metadata["vcycle-request"] == "req-contract-01" and server.metadata["vcycle-space"] == "contract"
    assert base64.b64decode(server.user_data) == b"#!/bin/sh\necho pilot\n"
    assert connector.flavors()["m1.small"] >= 1
