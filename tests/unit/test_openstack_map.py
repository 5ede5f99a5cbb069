"""The OpenStack connector's state map (one test per row) and error map, without a cloud.

The errors are openstacksdk's and keystoneauth's own exception classes, built
as openstacksdk builds them from Nova's answers (status and message as Nova
sends them for quota, a bad image, an outage).
"""

from __future__ import annotations

import pytest
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from vcycle.connectors.openstack import STATUS_MAP, _mapped, cloud_status
from vcycle.core.model import CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded, Throttled, Unauthorized

ROWS = [
    ("BUILD", None, 0, CloudStatus.STARTING),
    ("BUILD", "spawning", 0, CloudStatus.STARTING),
    ("ACTIVE", None, 1, CloudStatus.RUNNING),
    ("ACTIVE", None, 4, CloudStatus.STOPPED),  # powered off from inside, Nova not yet told
    ("ACTIVE", None, None, CloudStatus.RUNNING),  # power state hidden
    ("SHUTOFF", None, 4, CloudStatus.STOPPED),
    ("ERROR", None, 0, CloudStatus.FAILED),
    ("DELETED", None, 0, CloudStatus.DELETED),
    ("SOFT_DELETED", None, 4, CloudStatus.DELETED),
    ("ACTIVE", "deleting", 1, CloudStatus.DELETING),
    ("ERROR", "deleting", 0, CloudStatus.DELETING),
    ("REBOOT", "rebooting", 1, CloudStatus.RUNNING),
    ("HARD_REBOOT", "rebooting_hard", 1, CloudStatus.RUNNING),
    ("REBUILD", "rebuilding", 0, CloudStatus.STARTING),  # the guest boots again from its image
    ("MIGRATING", "migrating", 1, CloudStatus.RUNNING),  # live migration: the guest keeps running
    ("RESIZE", "resize_migrating", 1, CloudStatus.RUNNING),
    ("VERIFY_RESIZE", None, 1, CloudStatus.RUNNING),
    ("PASSWORD", None, 1, CloudStatus.RUNNING),
    ("STOPPED", None, 4, CloudStatus.STOPPED),
    ("PAUSED", None, 3, CloudStatus.STOPPED),
    ("SUSPENDED", None, 7, CloudStatus.STOPPED),
    ("SHELVED", None, 4, CloudStatus.STOPPED),
    ("SHELVED_OFFLOADED", None, 4, CloudStatus.STOPPED),
    ("active", None, 1, CloudStatus.RUNNING),  # Nova's words in any case
    ("UNHEARD_OF", None, 1, CloudStatus.UNKNOWN),
    (None, None, None, CloudStatus.UNKNOWN),
]


def test_every_nova_status_of_the_map_has_a_row_here() -> None:
    """A status added to the connector's map without a row of expectations here fails."""
    assert set(STATUS_MAP) <= {status for status, _, _, _ in ROWS}


@pytest.mark.parametrize(("status", "task", "power", "expected"), ROWS,
                         ids=[f"{s}-{t}-{p}" for s, t, p, _ in ROWS])
def test_state_map(status: str | None, task: str | None, power: int | None, expected: CloudStatus) -> None:
    assert cloud_status(status, task, power) is expected


def http_error(status: int, details: str, headers: dict[str, str] | None = None) -> sdk.HttpException:
    """What openstacksdk raises for Nova's JSON error answer."""
    import json

    import requests

    response = requests.Response()
    response.status_code = status
    response.url = "http://127.0.0.1:8774/v2.1/servers"
    response.headers["Content-Type"] = "application/json"
    response.headers.update(headers or {})
    response._content = json.dumps({"error": {"message": details, "code": status}}).encode()
    try:
        sdk.raise_from_response(response)
    except sdk.HttpException as exc:
        return exc
    raise AssertionError("no exception for an error answer")


@pytest.mark.parametrize(("error", "expected", "words"), [
    (http_error(403, "Quota exceeded for cores: Requested 2, but already used 20 of 20 cores"), QuotaExceeded,
     "Quota exceeded for cores"),
    (http_error(400, "Image 1234 could not be found."), LaunchRejected, "could not be found"),
    (http_error(404, "Flavor m9 could not be found."), LaunchRejected, "404"),
    (http_error(403, "Policy doesn't allow os_compute_api:servers:create to be performed."), Unauthorized,
     "Policy"),
    (http_error(401, "The request you have made requires authentication."), Unauthorized, "401"),
    (ksa.Unauthorized("The request you have made requires authentication. (HTTP 401)"), Unauthorized,
     "requires authentication"),
    (http_error(503, "Service Unavailable"), CloudUnavailable, "503"),
    (http_error(429, "Rate limit exceeded"), Throttled, "429"),
    (http_error(413, "Maximum number of instances exceeded"), QuotaExceeded, "413"),
    (ksa.ConnectFailure("Unable to establish connection to http://keystone:5000/v3/auth/tokens"),
     CloudUnavailable, "Unable to establish connection"),
    (sdk.SDKException("Cloud mycloud was not found."), CloudUnavailable, "was not found"),
])
def test_errors_map_to_behaviour(error: Exception, expected: type[Exception], words: str) -> None:
    with pytest.raises(expected, match=words) as caught, _mapped("create server vcycle-mt-x"):
        raise error
    assert type(caught.value) is expected
    assert str(caught.value).startswith("create server vcycle-mt-x")


def test_a_409_on_delete_is_retried_not_a_rejected_launch() -> None:
    """Nova answers 409 to a delete of a locked server or one busy with a task: retry it later
    (CloudUnavailable, which the executor records as DELETE_FAILED), as a create's 409 is a LaunchRejected."""
    conflict = http_error(409, "Cannot 'delete' instance abc while it is in task_state rebuilding")
    with pytest.raises(CloudUnavailable, match="409") as caught, _mapped("delete server abc", deleting=True):
        raise conflict
    assert not caught.value.backoff
    with pytest.raises(LaunchRejected, match="409"), _mapped("create server vcycle-mt-x"):
        raise conflict


@pytest.mark.parametrize(("header", "seconds"), [("30", 30.0), ("0", 0.0), (None, None), ("soon", None)])
def test_a_429_is_throttled_with_its_retry_after(header: str | None, seconds: float | None) -> None:
    with pytest.raises(Throttled) as caught, _mapped("list servers"):
        raise http_error(429, "Rate limit exceeded", {"Retry-After": header} if header is not None else None)
    assert caught.value.retry_after == seconds


def test_a_server_the_scheduler_found_no_host_for_is_the_offerings_no_capacity() -> None:
    """Nova accepts the create, then puts the server in ERROR with a NoValidHost fault: its flavor has no room."""
    from types import SimpleNamespace

    from vcycle.connectors.openstack import OpenStackConnector

    server = SimpleNamespace(id="i", name="vcycle-mt-x", status="ERROR", task_state=None, power_state=0,
                             metadata={}, flavor={"vcpus": 2, "original_name": "m1.huge"}, created_at=None,
                             availability_zone="nova", fault={"code": 500, "message": "No valid host was found. "
                                                              "There are not enough hosts available."})
    machine = OpenStackConnector._machine(None, server)  # type: ignore[arg-type]
    assert machine.status is CloudStatus.FAILED and machine.no_capacity and "No valid host" in machine.detail
    other = SimpleNamespace(**{**server.__dict__, "fault": {"code": 500, "message": "Build of instance aborted"}})
    assert OpenStackConnector._machine(None, other).no_capacity is None  # type: ignore[arg-type]
