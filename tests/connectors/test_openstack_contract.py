"""The OpenStack connector against a real Nova (Keystone, Glance, Placement, Neutron API and Nova with its fake
virt driver, started on this machine by scripts/openstack_testbed.py), through the connector contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from contract import ConnectorContract, spec

from vcycle.connectors.openstack import OpenStackConnector
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import LaunchRejected
from vcycle.testing import wait_for

STATE_ROWS = [("ACTIVE", CloudStatus.RUNNING), ("SHUTOFF", CloudStatus.STOPPED), ("ERROR", CloudStatus.FAILED)]


def clean(testbed: Any) -> None:
    """Delete every server of the project and wait until Nova lists none."""
    admin = testbed.connection(admin=True)
    for server in admin.compute.servers(all_projects=True):
        admin.compute.delete_server(server.id, ignore_missing=True)
    wait_for(lambda: not [s for s in admin.compute.servers(all_projects=True) if s.status != "DELETED"])


@pytest.fixture
def connector(openstack_testbed: Any) -> Iterator[OpenStackConnector]:
    clean(openstack_testbed)
    yield OpenStackConnector(openstack_testbed.connection(), "contract")
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


def nova_spec(**extra: Any) -> Any:
    return spec(**{"image": "image:cernvm-test", "flavor": "m1.small", **extra})


class TestOpenStackConnector(ConnectorContract):
    """The contract, with an image and flavor that exist in the testbed."""

    @pytest.fixture
    def spec_defaults(self) -> dict[str, Any]:
        return {"flavor": "m1.small", "image": "image:cernvm-test"}


def test_metadata_user_data_and_flavor_as_nova_keeps_them(connector: OpenStackConnector,
                                                          openstack_testbed: Any) -> None:
    made = connector.create_machine(nova_spec(processors=2, flavor="m1.medium", user_data=b"#!/bin/sh\necho hi\n",
                                              metadata={"joboutputs": "https://h:443/machines/contract/m/joboutputs"}))
    admin = openstack_testbed.connection(admin=True)
    server = admin.compute.get_server(made.id)
    assert server.metadata["vcycle-space"] == "contract" and server.metadata["vcycle-request"] == "req-contract-01"
    assert server.metadata["machinetype"] == "mt"
    assert server.metadata["joboutputs"] == "https://h:443/machines/contract/m/joboutputs"
    import base64

    assert base64.b64decode(server.user_data) == b"#!/bin/sh\necho hi\n"  # read back as admin
    listed = {m.name: m for m in connector.list_machines()}[made.name]
    assert listed.processors == 2 and listed.flavor == "m1.medium"


def test_a_machinetypes_zone_decides_over_the_spaces_spreading(openstack_testbed: Any) -> None:
    """The offering names zone-b (a machinetype's zones): real Nova places every server there, though the
    space spreads over both zones."""
    clean(openstack_testbed)
    spread = OpenStackConnector(openstack_testbed.connection(), "contract", zones=("zone-a", "zone-b"))
    try:
        for i in range(2):
            spread.create_machine(nova_spec(name=f"vcycle-mt-zoned0000{i}", request=f"req-zoned-{i}",
                                            flavor="m1.tiny", zone="zone-b"))
        admin = openstack_testbed.connection(admin=True)
        wait_for(lambda: all(admin.compute.get_server(m.id).status == "ACTIVE" for m in spread.list_machines()))
        assert sorted(m.zone or "" for m in spread.list_machines()) == ["zone-b", "zone-b"]
    finally:
        clean(openstack_testbed)


def test_a_missing_image_or_flavor_is_a_rejected_launch(connector: OpenStackConnector) -> None:
    with pytest.raises(LaunchRejected, match="image 'no-such-image' not found"):
        connector.create_machine(nova_spec(image="image:no-such-image"))
    with pytest.raises(LaunchRejected, match=r"flavor 'm9\.huge' does not exist"):
        connector.create_machine(nova_spec(flavor="m9.huge"))
    assert connector.list_machines() == []


def test_foreign_servers_are_listed_without_owner(connector: OpenStackConnector, openstack_testbed: Any) -> None:
    user = openstack_testbed.connection()
    flavor = user.compute.find_flavor("m1.tiny")
    user.compute.create_server(name="someone-elses", flavor_id=flavor.id, image_id=openstack_testbed.image_id,
                               networks="none")
    listed = {m.name: m for m in connector.list_machines()}
    assert listed["someone-elses"].owner is None and listed["someone-elses"].processors == 1


def test_capacity_is_the_projects_cores_quota(connector: OpenStackConnector) -> None:
    assert connector.capacity() == 20  # Nova's default cores quota
    assert connector.flavors()["m1.medium"] == 2
