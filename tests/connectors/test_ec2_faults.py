"""EC2: the state map and error map row by row, and faults injected between boto3 and moto's server.

Faults are injected with botocore's own event hooks (``before-send``), so
every request still goes through botocore's retry logic exactly as against
AWS; requests that are not faulted go over HTTP to the moto server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from vctest import load_text

from vcycle.connectors.ec2 import STATE_MAP, EC2Connector, map_error, map_state
from vcycle.core.model import CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected, NoCapacity, QuotaExceeded, Throttled, Unauthorized
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store

# EC2's instance states (DescribeInstances State.Name), and what each must become.
STATE_ROWS = [
    ("pending", CloudStatus.STARTING), ("running", CloudStatus.RUNNING), ("stopping", CloudStatus.STOPPED),
    ("stopped", CloudStatus.STOPPED), ("shutting-down", CloudStatus.DELETING), ("terminated", CloudStatus.DELETED),
    ("rebooting", CloudStatus.UNKNOWN), ("", CloudStatus.UNKNOWN),
]


@pytest.mark.parametrize(("raw", "expected"), STATE_ROWS)
def test_state_map_row(raw: str, expected: CloudStatus) -> None:
    assert map_state(raw) is expected


def test_every_row_of_the_state_map_has_a_test_row() -> None:
    """A state added to the connector's map without a row of expectations above fails."""
    assert set(STATE_MAP) <= {raw for raw, _ in STATE_ROWS}


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")


ERROR_ROWS = [
    ("InsufficientInstanceCapacity", NoCapacity), ("InsufficientCapacity", NoCapacity),
    ("InsufficientHostCapacity", NoCapacity), ("SpotMaxPriceTooLow", NoCapacity), ("Unsupported", NoCapacity),
    ("InstanceLimitExceeded", QuotaExceeded), ("VcpuLimitExceeded", QuotaExceeded),
    ("MaxSpotInstanceCountExceeded", QuotaExceeded), ("InvalidAMIID.NotFound", LaunchRejected),
    ("InvalidAMIID.Malformed", LaunchRejected), ("InvalidInstanceType.NotFound", LaunchRejected),
    ("InvalidParameterValue", LaunchRejected), ("InvalidUserData.Malformed", LaunchRejected),
    ("RequestLimitExceeded", Throttled), ("Throttling", Throttled), ("ThrottlingException", Throttled),
    ("InternalError", CloudUnavailable), ("ResourceLimitExceeded", QuotaExceeded),
    ("InsufficientFreeAddressesInSubnet", QuotaExceeded), ("AuthFailure", Unauthorized),
    ("UnauthorizedOperation", Unauthorized),
    ("InvalidClientTokenId", Unauthorized), ("SignatureDoesNotMatch", Unauthorized), ("RequestExpired", Unauthorized),
    ("ExpiredToken", Unauthorized), ("UnrecognizedClientException", Unauthorized),
    ("TooManyRequestsException", Throttled),
]


@pytest.mark.parametrize(("code", "kind"), ERROR_ROWS)
def test_error_map_row(code: str, kind: type[Exception]) -> None:
    mapped = map_error(client_error(code), "RunInstances x")
    assert type(mapped) is kind and code in str(mapped)


def test_every_code_the_connector_maps_has_a_test_row() -> None:
    """A code added to one of the connector's sets without a row of expectations above fails."""
    from vcycle.connectors import ec2

    mapped = ec2.CAPACITY_CODES | ec2.QUOTA_CODES | ec2.AUTH_CODES | ec2.THROTTLE_CODES
    assert mapped <= {code for code, _ in ERROR_ROWS}


def test_a_throttled_answer_carries_its_retry_after() -> None:
    answer = ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."},
                          "ResponseMetadata": {"HTTPStatusCode": 503, "HTTPHeaders": {"retry-after": "7"}}},
                         "RunInstances")
    mapped = map_error(answer, "RunInstances x")
    assert isinstance(mapped, Throttled) and mapped.retry_after == 7.0
    assert map_error(client_error("Throttling"), "x").retry_after is None  # type: ignore[attr-defined]
    assert mapped.made_nothing and mapped.space_wide and not mapped.backoff


def test_timeouts_are_cloud_unavailable() -> None:
    assert isinstance(map_error(ReadTimeoutError(endpoint_url="http://x"), "call"), CloudUnavailable)
    assert isinstance(map_error(ConnectTimeoutError(endpoint_url="http://x"), "call"), CloudUnavailable)


class Faults:
    """before-send hooks that answer some requests themselves, as a broken EC2 would."""

    def __init__(self) -> None:
        self.plan: list[str] = []  # one of: "500", "throttle", "timeout", "html" per request to fault
        self.seen: list[str] = []

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        self.seen.append(operation)
        if not self.plan:
            return None
        fault = self.plan.pop(0)
        if fault == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if fault == "html":  # a proxy in front of the endpoint, answering with its own page
            return AWSResponse(request.url, 200, {"Content-Type": "text/html"},
                               _Raw(b"<html><body>Gateway busy<br>try later</body>"))
        if fault == "throttle":
            body = (b"<Response><Errors><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                    b"</Errors><RequestID>x</RequestID></Response>")
            return AWSResponse(request.url, 400, {}, _Raw(body))
        return AWSResponse(request.url, 500, {}, _Raw(b"<Response><Errors><Error><Code>InternalError</Code>"
                                                     b"</Error></Errors></Response>"))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Any:
        yield self.body

    def read(self, *args: Any) -> bytes:
        return self.body


def faulty_connector(moto_url: str, attempts: int) -> tuple[EC2Connector, Faults]:
    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))
    faults = Faults()
    client.meta.events.register("before-send.ec2.*", faults)
    return EC2Connector(client, f"faults-{uuid.uuid4().hex[:8]}"), faults


@pytest.mark.parametrize("fault", ["500", "throttle", "timeout"])
def test_botocore_retries_pass_over_a_short_fault(moto_url: str, fault: str) -> None:
    connector, faults = faulty_connector(moto_url, attempts=3)
    faults.plan = [fault, fault]
    assert connector.list_machines() == []
    assert faults.seen.count("DescribeInstances") == 3  # two faulted tries, then the real answer


def test_a_lasting_fault_is_cloud_unavailable(moto_url: str) -> None:
    connector, faults = faulty_connector(moto_url, attempts=3)
    faults.plan = ["500"] * 3
    with pytest.raises(CloudUnavailable, match="DescribeInstances"):
        connector.list_machines()


def test_throttling_that_outlasts_botocores_retries_is_throttled(moto_url: str) -> None:
    """botocore retries a throttled call with its own jittered backoff; when every attempt is throttled, the
    answer is Throttled: vcycle leaves the space alone for a while instead of calling again."""
    connector, faults = faulty_connector(moto_url, attempts=3)
    faults.plan = ["throttle"] * 3
    with pytest.raises(Throttled, match="Throttling: Rate exceeded"):
        connector.list_machines()
    assert faults.seen.count("DescribeInstances") == 3


def test_a_page_that_is_not_xml_is_cloud_unavailable_for_every_call(moto_url: str, moto_ami: str) -> None:
    """botocore raises ResponseParserError (not one of its ClientError/BotoCoreError) for an answer that is
    not XML: each call must still end as CloudUnavailable with a short reason, never as a bug."""
    from datetime import UTC, datetime

    from vcycle.core.model import LaunchSpec

    connector, faults = faulty_connector(moto_url, attempts=1)
    spec = LaunchSpec(name="m", request_id="r", space=connector.space, machinetype="mt", manager="mgr", processors=2,
                      flavor="t3.micro", zone=None, image=f"image:{moto_ami}", user_data=b"x",
                      shutdown_at=datetime(2030, 1, 1, tzinfo=UTC))
    calls = [connector.list_machines, lambda: connector.create_machine(spec), lambda: connector.delete_machine("i-1")]
    for call in calls:
        faults.plan = ["html"] * 3
        with pytest.raises(CloudUnavailable, match="not EC2's XML") as caught:
            call()
        assert len(str(caught.value)) < 300


def test_cycles_carry_on_through_faults_and_limits_hold(moto_url: str, moto_ami: str, tmp_path: Path) -> None:
    connector, faults = faulty_connector(moto_url, attempts=2)
    config = load_text(f"[settings]\nmanager_name = mgr\nmax_create_fraction = 0.5\n[space {connector.space}]\n"
                       "api = ec2\nprocessors_limit = 8\n"
                       f"[machinetype {connector.space} mt]\nuser_data = ud\ntarget_share = 1\n"
                       f"backoff_seconds = 0\nfizzle_seconds = 0\nroot_image = image:{moto_ami}\n"
                       "flavor_names = t3.micro\nmin_processors = 2\n")
    from datetime import UTC, datetime

    from vcycle.connectors.ec2 import make_connector

    connector.machinetypes = make_connector(config.spaces[connector.space], config.settings).machinetypes
    store = Store.open(f"sqlite:///{tmp_path}/state.db")

    ctx = SpaceContext(config, config.spaces[connector.space], connector, store, {}, lambda *a: b"#!/bin/sh\n",
                       lambda: datetime.now(UTC))
    outcomes = []
    for round_ in range(6):
        faults.plan = [["500", "500"], ["throttle"], ["timeout", "timeout"], [], ["500"], []][round_]
        outcomes.append(run_cycle(ctx).ok)
        listed = connector.list_machines()
        assert sum(m.processors or 0 for m in listed) <= 8
    assert False in outcomes and True in outcomes  # some cycles failed, and the later ones went on
    assert sum(m.processors or 0 for m in connector.list_machines()) == 8  # filled to the limit in the end
    store.close()


class _Quotas:
    """Service Quotas answering with one queued answer per call (a dict or a botocore error), counting calls."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def get_service_quota(self, **kwargs: Any) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _quota_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetServiceQuota")


def test_a_throttled_quota_look_up_keeps_the_last_value_and_asks_again_next_cycle(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    quotas = _Quotas({"Quota": {"Value": 64.0}}, _quota_error("TooManyRequestsException", 400),
                     {"Quota": {"Value": 96.0}})
    connector = EC2Connector(None, "q", quotas=quotas, clock=lambda: clock[0])
    assert connector.capacity() == 64
    clock[0] += 3601
    assert connector.capacity() == 64 and "not read now, 64 kept" in caplog.text  # throttled: the last value, said
    assert connector.capacity() == 96 and quotas.calls == 3  # asked again at once, not an hour later


def test_an_auth_refusal_of_the_quota_is_logged_and_asked_again_in_an_hour(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    quotas = _Quotas(_quota_error("AccessDeniedException", 400), {"Quota": {"Value": 32.0}})
    connector = EC2Connector(None, "q", quotas=quotas, clock=lambda: clock[0])
    assert connector.capacity() is None
    assert "vCPU quota cannot be read" in caplog.text and "AccessDeniedException" in caplog.text
    clock[0] += 60
    assert connector.capacity() is None and quotas.calls == 1
    clock[0] += 3600
    assert connector.capacity() == 32


def test_a_delete_that_hits_a_bug_is_not_taken_for_an_unavailable_cloud() -> None:
    """Only botocore's errors become CloudUnavailable: a coding error reaches the executor as itself, which
    reports it as a bug (delete_bug) instead of retrying it for ever as an outage."""

    class Broken:
        def terminate_instances(self, **kwargs: Any) -> Any:
            raise TypeError("terminate_instances() got an unexpected keyword argument")

    with pytest.raises(TypeError):
        EC2Connector(Broken(), "q").delete_machine("i-0123456789abcdef0")


class _NoCapacityFor:
    """A before-send hook answering RunInstances for one instance type as EC2 does when it has none:
    ``InsufficientInstanceCapacity`` (an HTTP 500 in EC2's error XML), each time; other requests reach moto."""

    def __init__(self, instance_type: str, *also: str) -> None:
        self.wanted = [f"InstanceType={instance_type}".encode(), *(word.encode() for word in also)]
        self.refused = 0

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        if b"Action=RunInstances" not in body or not all(word in body for word in self.wanted):
            return None
        self.refused += 1
        return AWSResponse(request.url, 500, {}, _Raw(
            b"<Response><Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>We currently do not have "
            b"sufficient t3.micro capacity in the Availability Zone you requested (us-east-1a).</Message></Error>"
            b"</Errors><RequestID>ice-1</RequestID></Response>"))


def test_an_instance_type_without_capacity_falls_through_to_the_next_on_moto(
        moto_url: str, moto_ami: str, tmp_path: Path) -> None:
    """Real cycles on moto's EC2, whose t3.micro has no capacity (InsufficientInstanceCapacity from a hook that
    answers as EC2 does): every instance is made as t3a.micro, the next offering, in the first cycle already;
    t3.micro is asked once (botocore's two attempts) per offering_cooldown_seconds, and nothing backs off."""
    from datetime import UTC, datetime, timedelta

    from vcycle.connectors.ec2 import make_connector

    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    full = _NoCapacityFor("t3.micro")
    client.meta.events.register("before-send.ec2.RunInstances", full)
    space = f"ice-{uuid.uuid4().hex[:8]}"
    config = load_text(f"[settings]\nmanager_name = mgr\nmax_create_fraction = 0.5\n[space {space}]\n"
                       "api = ec2\nprocessors_limit = 16\n"
                       f"[machinetype {space} mt]\nuser_data = ud\ntarget_share = 1\n"
                       f"backoff_seconds = 600\nfizzle_seconds = 0\nroot_image = image:{moto_ami}\n"
                       "flavor_names = t3.micro t3a.micro\nmin_processors = 2\nmax_processors = 2\n")
    connector = EC2Connector(client, space)
    connector.machinetypes = make_connector(config.spaces[space], config.settings).machinetypes
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    now = [datetime.now(UTC)]
    ctx = SpaceContext(config, config.spaces[space], connector, store, {}, lambda *a: b"#!/bin/sh\n", lambda: now[0])
    run_cycle(ctx)
    first = connector.list_machines()
    assert len(first) == 4 and {m.flavor for m in first} == {"t3a.micro"}  # the next offering, the same cycle
    assert full.refused == 2  # one create call (two attempts) reached the full offering
    for _ in range(2):
        now[0] += timedelta(seconds=60)
        run_cycle(ctx)
    assert full.refused == 2  # cooled: not asked again within 180 s
    assert {m.flavor for m in connector.list_machines()} == {"t3a.micro"} and len(connector.list_machines()) == 8
    assert store.load(space).backoffs == {}
    store.close()


def test_spot_without_capacity_in_one_zone_falls_to_the_next_zone_then_on_demand_on_moto(
        moto_url: str, moto_ami: str, tmp_path: Path) -> None:
    """Real cycles on moto's EC2 with zones and capacity types: spot t3.micro has no capacity in us-east-1a
    (InsufficientInstanceCapacity from the hook), so the machines are spot in us-east-1b, placed and marketed as
    the offering says (moto keeps both); once spot is full in both zones, on-demand in us-east-1a takes them."""
    from datetime import UTC, datetime, timedelta

    from vcycle.connectors.ec2 import make_connector

    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    full_a = _NoCapacityFor("t3.micro", "Placement.AvailabilityZone=us-east-1a",
                            "InstanceMarketOptions.MarketType=spot")
    client.meta.events.register("before-send.ec2.RunInstances", full_a)
    space = f"zones-{uuid.uuid4().hex[:8]}"
    config = load_text(f"[settings]\nmanager_name = mgr\nmax_create_fraction = 1\n[space {space}]\n"
                       "api = ec2\nprocessors_limit = 8\n"
                       f"[machinetype {space} mt]\nuser_data = ud\ntarget_share = 1\n"
                       f"backoff_seconds = 600\nfizzle_seconds = 0\nroot_image = image:{moto_ami}\n"
                       "flavor_names = t3.micro\nmin_processors = 2\nmax_processors = 2\n"
                       "zones = us-east-1a us-east-1b\ncapacity_types = spot on-demand\n")
    connector = EC2Connector(client, space)
    connector.machinetypes = make_connector(config.spaces[space], config.settings).machinetypes
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    now = [datetime.now(UTC)]
    ctx = SpaceContext(config, config.spaces[space], connector, store, {}, lambda *a: b"#!/bin/sh\n", lambda: now[0])
    run_cycle(ctx)
    assert full_a.refused == 1
    ours = client.describe_instances(Filters=[{"Name": "tag:vcycle-space", "Values": [space]}])
    made = [i for r in ours["Reservations"] for i in r["Instances"]]
    assert len(made) == 4  # 8 processors of 2-processor machines
    assert {(i["Placement"]["AvailabilityZone"], i.get("InstanceLifecycle")) for i in made} == {("us-east-1b", "spot")}
    records = [r for r in store.load(space).records if r.state.value == "starting"]
    assert {r.zone for r in records} == {"us-east-1b"}
    full_b = _NoCapacityFor("t3.micro", "Placement.AvailabilityZone=us-east-1b",
                            "InstanceMarketOptions.MarketType=spot")
    client.meta.events.register("before-send.ec2.RunInstances", full_b)
    for machine in connector.list_machines():
        connector.delete_machine(machine.id)
    now[0] += timedelta(seconds=60)
    run_cycle(ctx)  # the four are gone: four new ones, spot in zone b first
    now[0] += timedelta(seconds=60)
    run_cycle(ctx)
    assert full_a.refused == 1 and full_b.refused == 1  # each full offering asked once
    alive = [i for r in client.describe_instances(Filters=[
        {"Name": "tag:vcycle-space", "Values": [space]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"] for i in r["Instances"]]
    assert {(i["Placement"]["AvailabilityZone"], i.get("InstanceLifecycle")) for i in alive} == {("us-east-1a", None)}
    assert store.load(space).backoffs == {}
    store.close()


def test_the_current_spot_price_comes_from_ec2_and_decides_the_cap_on_moto(
        moto_url: str, moto_ami: str, tmp_path: Path) -> None:
    """DescribeSpotPriceHistory on moto's EC2 (which prices every spot type at 0.00001 in each zone): the
    connector gives each spot offering its zone's price (the dearest zone's where it names none), asks once per
    SPOT_PRICE_SECONDS, and that price, not the configured estimate, is what the hourly cap counts: at the
    configured 10 an hour a cap of 15 allows one machine, at EC2's price all four that fit."""
    from datetime import UTC, datetime

    from vcycle.connectors.ec2 import make_connector
    from vcycle.core.model import Offering

    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    asked: list[str] = []
    client.meta.events.register("before-send.ec2.DescribeSpotPriceHistory", lambda **kw: asked.append("spot"))
    space = f"spot-{uuid.uuid4().hex[:8]}"
    config = load_text(f"[settings]\nmanager_name = mgr\nmax_create_fraction = 1\n[space {space}]\n"
                       "api = ec2\nprocessors_limit = 8\nmax_cost_per_hour = 15\noffering_prices = */spot=10\n"
                       f"[machinetype {space} mt]\nuser_data = ud\ntarget_share = 1\n"
                       f"backoff_seconds = 600\nfizzle_seconds = 0\nroot_image = image:{moto_ami}\n"
                       "flavor_names = t3.micro\nmin_processors = 2\nmax_processors = 2\n"
                       "zones = us-east-1a\ncapacity_types = spot\n")
    connector = EC2Connector(client, space)
    connector.machinetypes = make_connector(config.spaces[space], config.settings).machinetypes
    found = connector.prices([Offering("t3.micro", "us-east-1a", "spot"), Offering("t3.micro", None, "spot"),
                              Offering("t3.micro", "us-east-1a", "on-demand")])
    assert found["t3.micro@us-east-1a/spot"] == pytest.approx(0.00001)
    assert found["t3.micro/spot"] == pytest.approx(0.00001) and "t3.micro@us-east-1a/on-demand" not in found
    connector.prices([Offering("t3.micro", "us-east-1b", "spot")])
    assert asked == ["spot"]  # the same types: the answer kept
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    ctx = SpaceContext(config, config.spaces[space], connector, store, {}, lambda *a: b"#!/bin/sh\n",
                       lambda: datetime.now(UTC))
    report = run_cycle(ctx)
    assert report.counts["creates"] == 4, report.decisions
    assert "1e-05 an hour on t3.micro@us-east-1a/spot" in " ".join(d.reason for d in report.decisions)
    unpriced = SpaceContext(config, config.spaces[space], _NoPrices(connector), store, {},
                            lambda *a: b"#!/bin/sh\n", lambda: datetime.now(UTC))
    for machine in connector.list_machines():
        connector.delete_machine(machine.id)
    store.close()
    other = Store.open(f"sqlite:///{tmp_path}/other.db")
    unpriced.store = other
    assert run_cycle(unpriced).counts["creates"] == 1  # the configured 10 an hour: one under the cap of 15
    other.close()


class _NoPrices:
    """The EC2 connector as one that cannot tell its prices."""

    def __init__(self, inner: EC2Connector) -> None:
        self.inner = inner
        self.api = inner.api
        self.max_user_data_bytes = inner.max_user_data_bytes

    def __getattr__(self, name: str) -> object:
        if name == "prices":
            raise AttributeError(name)
        return getattr(self.inner, name)
