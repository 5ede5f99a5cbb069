"""The libcloud connector's Google Compute Engine space: libcloud's own, unmodified GCE driver (its service-account
OAuth with a real RS256 JWT, its connection, its machine types) against the project's fake Compute Engine v1 API
and token endpoint on loopback HTTP (tests/fakegce.py: no GCE emulator exists). Every request and response body
of the tests is validated against the official Compute v1 discovery document, the one google-api-python-client
ships inside its package (googleapiclient/discovery_cache/documents/compute.v1.json), each method found by the
document's own paths. Real: libcloud, the JWT and its signature, the HTTP, the JSON. The fake: Compute Engine."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gceshapes
import pytest
from contract import ConnectorContract, by_name, spec
from fakegce import Gce, serve

from vcycle.connectors.libcloud import (
    GCE_STATES,
    GCEConnector,
    LibcloudMachinetype,
    LibcloudSpace,
    gce_user_data,
    label_value,
    make_driver,
)
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded

IMAGE = "image:projects/debian-cloud/global/images/family/debian-12"


@pytest.fixture
def gce(tmp_path: Path) -> Iterator[Gce]:
    yield from serve(tmp_path / "gce")


def keys(gce: Gce, **extra: Any) -> LibcloudSpace:
    given: dict[str, Any] = {"driver": "gce", "secret_file": str(gce.key_file), "project": gce.project,
                             "zones": ("europe-west4-a", "europe-west4-b"), "host": "127.0.0.1", "port": gce.port,
                             "secure": False}
    return LibcloudSpace(**(given | extra))


def connector_for(gce: Gce, tmp_path: Path, space: str = "contract", **extra: Any) -> GCEConnector:
    machinetypes = extra.pop("machinetypes", None)
    options = keys(gce, **extra)
    driver = make_driver(options, 30, str(tmp_path / f"token-{time.monotonic_ns()}.json"))
    return GCEConnector(driver, space, "mgr", options=options, machinetypes=machinetypes)


def gce_spec(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("flavor", "e2-small")
    kwargs.setdefault("image", IMAGE)
    return spec(*args, **kwargs)


@pytest.fixture
def connector(gce: Gce, tmp_path: Path) -> GCEConnector:
    return connector_for(gce, tmp_path)


STATE_ROWS = [("PROVISIONING", CloudStatus.STARTING), ("STAGING", CloudStatus.STARTING),
              ("RUNNING", CloudStatus.RUNNING), ("REPAIRING", CloudStatus.RUNNING), ("STOPPING", CloudStatus.STOPPED),
              ("STOPPED", CloudStatus.STOPPED), ("SUSPENDING", CloudStatus.STOPPED),
              ("SUSPENDED", CloudStatus.STOPPED), ("TERMINATED", CloudStatus.STOPPED),
              ("SOMETHING_NEW", CloudStatus.UNKNOWN)]


@pytest.fixture
def cloud_tweak(gce: Gce) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        time.sleep(gce.op_seconds)
        with gce.lock:
            gce.settle()
            gce.instances[machine.name]["status"] = raw

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestGCE(ConnectorContract):
    """The contract, with a machine type and an image in every spec."""

    @pytest.fixture
    def spec_defaults(self) -> dict[str, Any]:
        return {"flavor": "e2-small", "image": IMAGE}


def test_every_status_has_a_row() -> None:
    assert set(GCE_STATES) | {"SOMETHING_NEW"} == {row[0] for row in STATE_ROWS}


# --- the discovery document ---------------------------------------------------------------------------------


def discovery() -> dict[str, Any]:
    import os

    googleapiclient = pytest.importorskip("googleapiclient")
    path = Path(os.path.dirname(googleapiclient.__file__)) / "discovery_cache/documents/compute.v1.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]



def test_every_body_on_the_wire_is_valid_for_the_compute_v1_discovery_document(gce: Gce, tmp_path: Path) -> None:
    found = connector_for(gce, tmp_path, machinetypes={"mt": LibcloudMachinetype(spot=True)})
    found.list_machines()
    found.capacity()
    made = [found.create_machine(gce_spec(name=f"vcycle-mt-wire{i:06d}", request=f"req-{i}")) for i in range(3)]
    gce.fault("POST", "/instances", async_error="ZONE_RESOURCE_POOL_EXHAUSTED")
    found.create_machine(gce_spec(name="vcycle-mt-late000001", request="req-late"))
    gce.quota["PREEMPTIBLE_CPUS"] = 8
    with pytest.raises(QuotaExceeded):
        found.create_machine(gce_spec(name="vcycle-mt-over000001", request="req-over"))
    time.sleep(gce.op_seconds)
    found.list_machines()
    for machine in made:
        found.delete_machine(machine.id)
    found.list_machines()
    checked, problems = gceshapes.check_exchanges(gce.exchanges, discovery())
    assert problems == []
    assert checked >= 12
    kinds = {(e["method"], e["path"].split("/")[-1] if e["method"] != "GET" else e["path"].split("/")[-2])
             for e in gce.exchanges}
    assert ("POST", "instances") in kinds and ("DELETE", "vcycle-mt-wire000000") in kinds


@pytest.mark.parametrize(("body", "wrong"), [
    ({"name": "x", "machineType": "zones/z/machineTypes/e2-small", "sheduling": {}}, "sheduling: not a property"),
    ({"name": "x", "scheduling": {"provisioningModel": "CHEAP"}}, "is not one of"),
    ({"name": "x", "disks": {"boot": True}}, "an array expected"),
    ({"name": "x", "scheduling": {"preemptible": "yes"}}, "a boolean expected"),
])
def test_the_discovery_check_catches_a_planted_mistake(body: dict[str, Any], wrong: str) -> None:
    document = discovery()
    errors: list[str] = []
    gceshapes.validate(body, {"$ref": "Instance"}, document["schemas"], "request", errors)
    assert any(wrong in e for e in errors), errors
    errors = []
    gceshapes.validate({"id": 12, "kind": "compute#instance"}, {"$ref": "Instance"}, document["schemas"], "response",
                       errors)
    assert any("uint64" in e for e in errors), errors  # GCE sends 64-bit ids as strings


# --- what a machine is on GCE -------------------------------------------------------------------------------


def test_a_machine_has_labels_metadata_user_data_and_spot_scheduling(gce: Gce, tmp_path: Path) -> None:
    found = connector_for(gce, tmp_path, space="gce.example.org", machinetypes={"mt": LibcloudMachinetype(spot=True)})
    user_data = b"#cloud-config\nruncmd: [[echo, pilot]]\n"
    made = found.create_machine(gce_spec(user_data=user_data))
    instance = gce.instances["vcycle-mt-contract01"]
    items = {i["key"]: i["value"] for i in instance["metadata"]["items"]}
    assert items["user-data"] == user_data.decode() and items["vcycle-space"] == "contract"
    assert instance["labels"]["vcycle_request"] == "req-contract-01"
    assert instance["labels"]["vcycle_space"] == "contract"
    assert instance["scheduling"]["provisioningModel"] == "SPOT"
    assert instance["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert instance["disks"][0]["autoDelete"] is True
    assert made.id == instance["id"]
    assert label_value("gce.example.org") != "gce.example.org" and re.fullmatch(r"[a-z0-9_-]{1,63}",
                                                                                  label_value("gce.example.org"))


def test_foreign_instances_are_not_listed_and_preempted_spot_ones_are_gone(gce: Gce, tmp_path: Path) -> None:
    found = connector_for(gce, tmp_path, machinetypes={"mt": LibcloudMachinetype(spot=True)})
    other = connector_for(gce, tmp_path, space="another")
    other.create_machine(dataclasses.replace(gce_spec(name="vcycle-mt-theirs0001", request="req-theirs"),
                                             space="another"))
    found.create_machine(gce_spec())
    assert set(by_name(found)) == {"vcycle-mt-contract01"}
    time.sleep(gce.op_seconds)
    gce.preempt("vcycle-mt-contract01")
    assert by_name(found) == {}


def test_zones_are_spread_fewest_of_ours_first(gce: Gce, tmp_path: Path) -> None:
    found = connector_for(gce, tmp_path)
    found.list_machines()
    for i in range(4):
        found.create_machine(gce_spec(name=f"vcycle-mt-zones{i:05d}", request=f"req-z{i}"))
    zones = sorted(i["zone"].rsplit("/", 1)[1] for i in gce.instances.values())
    assert zones == ["europe-west4-a", "europe-west4-a", "europe-west4-b", "europe-west4-b"]


def test_nothing_waits_for_a_zone_operation_and_a_late_failure_is_a_failed_machine(gce: Gce, tmp_path: Path) -> None:
    gce.op_seconds = 30
    found = connector_for(gce, tmp_path)
    gce.fault("POST", "/instances", async_error="ZONE_RESOURCE_POOL_EXHAUSTED")
    started = time.perf_counter()
    found.create_machine(gce_spec())
    assert time.perf_counter() - started < 5
    assert not [e for e in gce.exchanges if "/operations/" in e["path"]]
    assert by_name(found)["vcycle-mt-contract01"].status is CloudStatus.STARTING
    gce.op_seconds = 0.0
    listed = by_name(found)["vcycle-mt-contract01"]
    assert listed.status is CloudStatus.FAILED and "ZONE_RESOURCE_POOL_EXHAUSTED" in listed.detail
    found.delete_machine(listed.id)  # nothing to delete: fine
    assert by_name(found) == {}


def test_a_retried_insert_makes_no_second_instance_and_another_requests_name_is_refused(gce: Gce,
                                                                                      tmp_path: Path) -> None:
    connector_for(gce, tmp_path).create_machine(gce_spec())
    again = connector_for(gce, tmp_path).create_machine(gce_spec())  # a new process, no listing: the same request
    assert again.id == gce.instances["vcycle-mt-contract01"]["id"] and len(gce.instances) == 1
    fresh = connector_for(gce, tmp_path)  # no listing either: it picks the instance's zone, the first, again
    with pytest.raises(LaunchRejected, match="another request"):
        fresh.create_machine(gce_spec(request="req-someone-else"))
    assert len(gce.instances) == 1


def test_capacity_is_the_regions_cpus_quota_less_what_others_hold(gce: Gce, tmp_path: Path) -> None:
    other = connector_for(gce, tmp_path, space="another")
    other.create_machine(dataclasses.replace(gce_spec(name="vcycle-mt-theirs0001", request="req-theirs",
                                                      flavor="e2-standard-4"), space="another"))
    found = connector_for(gce, tmp_path)
    found.list_machines()
    found.create_machine(gce_spec())  # 2 of ours
    assert found.capacity() == 24 - 4
    spot = connector_for(gce, tmp_path, machinetypes={"mt": LibcloudMachinetype(spot=True)})
    spot.list_machines()
    assert spot.capacity() == 24


@pytest.mark.parametrize(("status", "reason", "expected"), [
    (403, "quotaExceeded", QuotaExceeded), (429, "rateLimitExceeded", CloudUnavailable),
    (400, "invalid", LaunchRejected), (404, "notFound", LaunchRejected), (403, "forbidden", CloudUnavailable),
    (503, "backendError", CloudUnavailable)])
def test_errors_of_an_insert(gce: Gce, tmp_path: Path, status: int, reason: str, expected: type) -> None:
    found = connector_for(gce, tmp_path)
    gce.fault("POST", "/instances", status=status, reason=reason, message=f"it said {reason}")
    with pytest.raises(expected, match=reason):
        found.create_machine(gce_spec())
    assert gce.instances == {}


def test_a_bad_key_is_cloud_unavailable_and_no_secret_is_said(gce: Gce, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    wrong = json.loads(gce.key_file.read_text())
    wrong["private_key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(wrong))
    with pytest.raises(CloudUnavailable) as raised:
        make_driver(keys(gce, secret_file=str(path)), 30, str(tmp_path / "t.json"))
    assert "PRIVATE KEY" not in str(raised.value)


@pytest.mark.parametrize(("data", "key", "items"), [
    (b"#cloud-config\n", "user-data", [("user-data", "#cloud-config\n")]),
    (b"#!/bin/sh\necho hi\n", "startup-script", [("startup-script", "#!/bin/sh\necho hi\n")]),
    (b"\x1f\x8b\x08binary", "user-data", [("user-data", "H4sIYmluYXJ5"), ("user-data-encoding", "base64")]),
])
def test_user_data_goes_as_text_or_base64(data: bytes, key: str, items: list[tuple[str, str]]) -> None:
    assert [(i["key"], i["value"]) for i in gce_user_data(data, key)] == items


def test_user_data_too_large_for_a_metadata_value_is_refused() -> None:
    import os

    with pytest.raises(LaunchRejected, match="262144 bytes of a GCE metadata value"):
        gce_user_data(os.urandom(200 * 1024), "user-data")
    with pytest.raises(LaunchRejected, match="startup-script is text"):
        gce_user_data(b"\xff" * 10, "startup-script")
