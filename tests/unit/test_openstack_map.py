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


def test_a_listed_server_s_json_reads_as_its_sdk_resource_does() -> None:
    """The listing reads Nova's JSON as plain dicts (benchmarks/parse.py: resources cost ~2 ms a server); each
    field comes out as _machine makes it of openstacksdk's Server resource for the same body."""
    from openstack.compute.v2.server import Server

    from vcycle.connectors.openstack import OpenStackConnector

    bodies = [
        {"id": "a", "name": "vcycle-mt-a", "status": "ACTIVE", "OS-EXT-STS:task_state": None,
         "OS-EXT-STS:power_state": 1, "OS-EXT-AZ:availability_zone": "az2", "created": "2026-12-01T10:00:00Z",
         "flavor": {"vcpus": 4, "original_name": "m1.large"},
         "metadata": {"vcycle-space": "sp", "vcycle-machinetype": "mt", "vcycle-manager": "m",
                      "vcycle-request-id": "r"}},
        {"id": "b", "name": "vcycle-mt-b", "status": "ERROR", "OS-EXT-STS:task_state": None,
         "OS-EXT-STS:power_state": 0, "created": "2026-12-01T10:00:00Z", "flavor": {"vcpus": 2},
         "metadata": {}, "fault": {"code": 500, "message": "No valid host was found. "}},
        {"id": "c", "name": "other", "status": "ACTIVE", "OS-EXT-STS:task_state": "deleting",
         "OS-EXT-STS:power_state": 4, "created": None, "flavor": {"vcpus": 1}, "metadata": {}},
    ]
    for body in bodies:
        listed = OpenStackConnector._listed(None, body)  # type: ignore[arg-type]
        assert listed == OpenStackConnector._machine(None, Server.existing(**body))  # type: ignore[arg-type]
    assert OpenStackConnector._listed(None, bodies[1]).no_capacity  # type: ignore[arg-type]
    assert OpenStackConnector._listed(None, bodies[2]).status is CloudStatus.DELETING  # type: ignore[arg-type]
    bare = {**bodies[2], "flavor": {}}  # no flavor told: its processors unknown (the resource would say 0)
    assert OpenStackConnector._listed(None, bare).processors is None  # type: ignore[arg-type]


def test_the_listing_pages_by_marker_until_a_short_page() -> None:
    """GET /servers/detail a thousand at a time, each page after the last id of the one before, at the
    microversion that embeds the flavor; a short page (or one without servers_links) is the last."""
    from types import SimpleNamespace

    from vcycle.connectors import openstack as nova

    asked: list[tuple[str, object, str]] = []
    servers = [{"id": f"s{n:05d}", "name": f"vcycle-mt-{n}", "status": "ACTIVE", "flavor": {"vcpus": 1},
                "metadata": {}} for n in range(2003)]

    def get(path: str, params: dict[str, object], microversion: str) -> object:
        asked.append((path, params.get("marker"), microversion))
        start = 0 if "marker" not in params else next(i for i, s in enumerate(servers)
                                                      if s["id"] == params["marker"]) + 1
        page = servers[start:start + int(str(params["limit"]))]
        links = [{"rel": "next", "href": "..."}] if start + len(page) < len(servers) else []
        return SimpleNamespace(status_code=200, headers={}, json=lambda: {"servers": page, "servers_links": links})

    connector = nova.OpenStackConnector(SimpleNamespace(compute=SimpleNamespace(get=get)), "sp")
    assert [m.id for m in connector.list_machines()] == [s["id"] for s in servers]
    assert asked == [("/servers/detail", None, "2.47"), ("/servers/detail", "s00999", "2.47"),
                     ("/servers/detail", "s01999", "2.47")]
