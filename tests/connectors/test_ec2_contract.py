"""The EC2 connector against moto's server, over real HTTP with a real boto3 client (no in-process mocking)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from contract import ConnectorContract, spec

from vcycle.connectors.ec2 import EC2Connector, MachinetypeOptions
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected


def client(moto_url: str, region: str = "us-east-1", attempts: int = 3) -> Any:
    return boto3.client("ec2", endpoint_url=moto_url, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))


@pytest.fixture
def connector(moto_url: str, moto_ami: str) -> EC2Connector:
    # every test its own space, so the listings never see another test's instances
    space = f"contract-{uuid.uuid4().hex[:8]}"
    found = EC2Connector(client(moto_url), space, machinetypes={"mt": MachinetypeOptions(flavor_names=("t3.micro",))})
    found.test_ami = moto_ami  # type: ignore[attr-defined]
    return found


def ec2_spec(connector: EC2Connector, **extra: Any):  # type: ignore[no-untyped-def]
    made = spec(flavor="t3.micro", image=f"image:{connector.test_ami}", **extra)  # type: ignore[attr-defined]
    return made.__class__(**{**{f: getattr(made, f) for f in made.__slots__}, "space": connector.space})


class TestEC2Connector(ConnectorContract):
    """The contract suite, with specs for this connector's space and a real AMI."""

    @pytest.fixture
    def spec_defaults(self, connector: EC2Connector) -> dict[str, Any]:
        return {"flavor": "t3.micro", "image": f"image:{connector.test_ami}",  # type: ignore[attr-defined]
                "space": connector.space}

    def test_created_machine_is_listed_with_its_owner_tags(self, connector: EC2Connector) -> None:  # type: ignore[override]
        import contract

        made = connector.create_machine(contract.spec())
        listed = {m.name: m for m in connector.list_machines()}["vcycle-mt-contract01"]
        assert listed.id == made.id and listed.owner is not None
        assert (listed.owner.space, listed.owner.machinetype, listed.owner.request_id) == (
            connector.space, "mt", "req-contract-01")
        assert listed.processors == 2 and listed.flavor == "t3.micro"  # t3.micro has 2 vCPUs


STATE_ROWS = [("running", CloudStatus.RUNNING), ("stopped", CloudStatus.STOPPED)]


@pytest.fixture
def cloud_tweak(connector: EC2Connector) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        if raw == "stopped":
            connector.client.stop_instances(InstanceIds=[machine.id])
        else:
            connector.client.describe_instances(InstanceIds=[machine.id])  # moto: pending -> running

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


def test_bad_image_and_instance_type_are_launch_rejected(connector: EC2Connector) -> None:
    import contract

    with pytest.raises(LaunchRejected, match=r"InvalidAMIID\.NotFound"):
        connector.create_machine(contract.spec(image="image:ami-00000000deadbeef"))
    good = f"image:{connector.test_ami}"  # type: ignore[attr-defined]
    with pytest.raises(LaunchRejected, match=r"InvalidInstanceType\.NotFound"):
        connector.create_machine(contract.spec(image=good, flavor="x9.nope"))


def test_terminating_an_unknown_instance_is_success(connector: EC2Connector) -> None:
    connector.delete_machine("i-0123456789abcdef0")


def test_user_data_and_tags_reach_the_instance(connector: EC2Connector) -> None:
    made = connector.create_machine(ec2_spec(connector, user_data=b"#!/bin/sh\necho pilot\n"))
    attribute = connector.client.describe_instance_attribute(InstanceId=made.id, Attribute="userData")
    import base64

    assert base64.b64decode(attribute["UserData"]["Value"]) == b"#!/bin/sh\necho pilot\n"
    reservation = connector.client.describe_instances(InstanceIds=[made.id])["Reservations"][0]
    tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0]["Tags"]}
    assert tags["Name"] == "vcycle-mt-contract01" and tags["vcycle-request"] == "req-contract-01"


def test_large_user_data_is_gzipped_to_fit(connector: EC2Connector) -> None:
    import base64
    import gzip

    big = ("echo 'the same line again and again'\n" * 1000).encode()  # 36 KB, gzips to far less than 16 KB
    made = connector.create_machine(ec2_spec(connector, user_data=big))
    value = connector.client.describe_instance_attribute(InstanceId=made.id, Attribute="userData")
    assert gzip.decompress(base64.b64decode(value["UserData"]["Value"])) == big


def test_subnets_are_used_evenly(moto_url: str, moto_ami: str) -> None:
    ec2 = client(moto_url)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = tuple(ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in range(2))
    space = f"subnets-{uuid.uuid4().hex[:8]}"
    connector = EC2Connector(ec2, space, subnet_ids=subnets)
    connector.test_ami = moto_ami  # type: ignore[attr-defined]
    for i in range(4):
        connector.create_machine(ec2_spec(connector, name=f"vcycle-mt-s{i}", request=f"req-s{i}"))
    reservations = ec2.describe_instances(Filters=[{"Name": "tag:vcycle-space", "Values": [space]}])["Reservations"]
    used = [i["SubnetId"] for r in reservations for i in r["Instances"]]
    assert sorted(used) == sorted([subnets[0], subnets[1]] * 2)


def test_unreachable_endpoint_is_cloud_unavailable() -> None:
    connector = EC2Connector(client("http://127.0.0.1:9", attempts=1), "nowhere")
    with pytest.raises(CloudUnavailable, match="DescribeInstances"):
        connector.list_machines()


def test_capacity_is_none_where_service_quotas_does_not_answer(moto_url: str) -> None:
    quotas = boto3.client("service-quotas", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    assert EC2Connector(client(moto_url), "q", quotas=quotas).capacity() is None
    assert EC2Connector(client(moto_url), "q").capacity() is None
