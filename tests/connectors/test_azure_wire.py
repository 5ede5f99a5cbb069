"""What the Azure connector and the fake ARM say on the wire, checked by others than their authors.

A workload of the connector (listings, creates with a public IP and spot, a create refused for quota, a late
AllocationFailed, deletes, the orphan sweep, sizes, usages) runs against tests/fakearm.py with every exchange
recorded as an oav traffic file. Then:

- every request body the connector sent and every response body the fake gave is read against the wire models of
  the installed azure-mgmt-compute and azure-mgmt-network (tests/armshapes.py), and a planted mistake is caught;
- the same traffic, with the compute calls made at api-version 2021-11-01 (a pipeline policy of the test's own
  rewrites it: the newest Compute Swagger cannot be had here), is validated by Microsoft's ``oav validate-traffic``
  (npm oav 4.0.3, installed by ``make azure-tools``) against Microsoft's published Compute 2021-11-01 Swagger
  (tests/fixtures/azure: a copy with oav's own test edits, see its NOTICE.md): no error but those the edits make.

Real: the SDKs, the connector, oav, Microsoft's Swagger. The fake: the server whose answers are checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import armshapes
import azurespace
import pytest
from contract import spec
from fakearm import Arm
from vctest import unavailable

from vcycle.connectors.azure import AzureConnector, AzureMachinetype, make_clients
from vcycle.core.model import LaunchSpec
from vcycle.errors import QuotaExceeded

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests/fixtures/azure/specification/compute/resource-manager/Microsoft.Compute/stable/2021-11-01/" \
              "compute.json"
OAV = Path(os.environ.get("VCYCLE_OAV_DIR", ROOT / ".azure/oav"))
# the properties oav's authors edited in its copy of the Swagger (tests/fixtures/azure/NOTICE.md)
EDITED = {"vmSize", "computerName", "customData", "adminUsername", "publisher", "sku", "offer"}


def api_version_policy(version: str) -> Any:
    """A pipeline policy that sends every call at ``version`` (the test's own: the connector never does this)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class ApiVersion(SansIOHTTPPolicy):  # type: ignore[type-arg]
        def on_request(self, request: Any) -> None:
            url = request.http_request.url
            request.http_request.url = re.sub(r"api-version=[^&]+", f"api-version={version}", url)

    return ApiVersion()


def launch(name: str, request: str, flavor: str = "Standard_B2s", machinetype: str = "mt") -> LaunchSpec:
    return dataclasses.replace(spec(name=name, request=request, flavor=flavor, image=azurespace.IMAGE),
                               machinetype=machinetype)


def workload(arm: Arm, directory: Path, compute_api: str | None = None) -> None:
    """What a few cycles of a space do, through the connector."""
    keys = azurespace.options(arm, directory, public_ip=True, orphan_seconds=1, zones=("1", "2"))
    clients = make_clients(keys, 30)
    compute = clients.compute
    if compute_api is not None:
        from azure.mgmt.compute import ComputeManagementClient

        compute = ComputeManagementClient(clients.credential, keys.subscription_id, base_url=arm.url,
                                          connection_verify=str(arm.ca_file),
                                          per_call_policies=[api_version_policy(compute_api)])
    found = AzureConnector(compute, clients.network, "contract", keys, flavors=("Standard_B2s",),
                           ssh_key=azurespace.SSH_KEY,
                           machinetypes={"mt": AzureMachinetype(), "spot": AzureMachinetype(spot=True)})
    arm.page_size = 2
    arm.add_vm(azurespace.SUBSCRIPTION, azurespace.GROUP, "foreign-vm", azurespace.LOCATION)
    found.list_machines()
    found.capacity()
    for i in range(3):
        found.create_machine(launch(f"vcycle-mt-wire00000{i}", f"req-{i}"))
    found.create_machine(launch("vcycle-spot-wire00000", "req-s", "Standard_B1s", machinetype="spot"))
    arm.fault("PUT", "/virtualMachines/vcycle-mt-late000000", async_error={"code": "AllocationFailed",
                                                                          "message": "Allocation failed."})
    found.create_machine(launch("vcycle-mt-late000000", "req-l"))
    arm.limits["family"] = 6
    with pytest.raises(QuotaExceeded):
        found.create_machine(launch("vcycle-mt-quota00000", "req-q"))
    time.sleep(arm.op_seconds + 0.1)
    listed = found.list_machines()
    found.capacity()
    time.sleep(1.1)
    for machine in listed:
        if machine.owner is not None and machine.name in ("vcycle-mt-wire000000", "vcycle-mt-late000000"):
            found.delete_machine(machine.id)  # the first delete after the listing sweeps orphans (the quota one's IP)
    found.list_machines()


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    record = tmp_path / "traffic"
    arm = Arm(tmp_path / "arm", record=record).start()
    try:
        workload(arm, tmp_path / "keys")
    finally:
        arm.stop()
    return record


def exchanges(record: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(record.glob("*.json"))]


def test_every_body_on_the_wire_is_in_the_sdks_models(traffic: Path) -> None:
    seen = exchanges(traffic)
    problems, kinds = [], set()
    for exchange in seen:
        request, response = exchange["liveRequest"], exchange["liveResponse"]
        path = request["url"].split("?")[0].removeprefix("https://management.azure.com")
        errors, _ = armshapes.check_exchange(request["method"], path, int(response["statusCode"]), request["body"],
                                             response["body"])
        problems += [f"{request['method']} {path}: {e}" for e in errors]
        kinds.add((request["method"], re.sub(r"/[^/]*-wire0+\d|/vcycle-[^/]+|/foreign-vm", "/NAME", path)))
    assert problems == []
    assert len(seen) > 30
    sent = {m for m, _ in kinds}
    assert {"get", "put", "delete"} <= sent  # listings, creates, deletes all went through the check


@pytest.mark.parametrize(("body", "wrong"), [
    ({"location": "x", "properties": {"hardwareProfile": {"vmSize": "B1s"}, "provisioningstate": "x"}},
     "provisioningstate: not a property"),
    ({"location": "x", "properties": {"priority": 1}}, "priority: a string expected"),
    ({"location": "x", "properties": {"networkProfile": {"networkInterfaces": {"id": "x"}}}}, "an array expected"),
    ({"location": "x", "tags": ["a"]}, "tags: an object expected"),
])
def test_the_shape_check_catches_a_planted_mistake(body: dict[str, Any], wrong: str) -> None:
    errors, _ = armshapes.check_exchange("GET", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/"
                                                "virtualMachines/vm", 200, None, body)
    assert any(wrong in e for e in errors), errors


def oav(record: Path, report: Path) -> dict[str, Any]:
    npx = shutil.which("npx")
    if npx is None or not (OAV / "node_modules/oav").is_dir():
        unavailable("oav", f"npm's oav is not installed in {OAV} (make azure-tools)")
    done = subprocess.run([str(npx), "--no-install", "oav", "validate-traffic", str(record), str(SPEC), "--report", "",
                           "--jsonReport", str(report), "-l", "error"], cwd=OAV, capture_output=True, text=True,
                          timeout=600)
    if not report.exists():
        raise AssertionError(f"oav wrote no report (exit {done.returncode}): {done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def findings(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """oav's errors, those its own test edits of the Swagger make apart from the others."""
    edited, other = [], []
    for error in result["errors"]:
        message = error.get("errorMessage", "")
        named = message.split('"')[1] if '"' in message else ""
        line = f"{error.get('operationId')} {error.get('errorCode')}: {message[:200]}"
        if error.get("errorCode") in ("READONLY_PROPERTY_NOT_ALLOWED_IN_REQUEST",
                                      "WRITEONLY_PROPERTY_NOT_ALLOWED_IN_RESPONSE") and named in EDITED:
            edited.append(line)
        else:
            other.append(line)
    return edited, other


def compute_traffic(tmp_path: Path) -> Path:
    """The workload's traffic with the compute calls at 2021-11-01, those alone (the network Swagger cannot be had
    here)."""
    record = tmp_path / "traffic"
    arm = Arm(tmp_path / "arm", record=record).start()
    try:
        workload(arm, tmp_path / "keys", compute_api="2021-11-01")
    finally:
        arm.stop()
    for path in record.glob("*.json"):
        if "api-version=2021-11-01" not in json.loads(path.read_text())["liveRequest"]["url"]:
            path.unlink()
    return record


def test_oav_finds_the_traffic_valid_against_microsofts_compute_swagger(tmp_path: Path) -> None:
    result = oav(compute_traffic(tmp_path), tmp_path / "oav.json")
    covered = {op for entry in result.get("passedOperationsList", []) for op in entry.get("operationIds", [])}
    covered |= {error.get("operationId") for error in result["errors"]}
    # disks and resource SKUs are in other Swagger files of 2021 (disk.json, skus.json), not to be had here
    assert {"VirtualMachines_CreateOrUpdate", "VirtualMachines_List", "VirtualMachines_ListAll",
            "VirtualMachines_Delete", "Usage_List"} <= covered, result
    _, other = findings(result)
    assert other == []


def test_oav_catches_a_planted_mistake(tmp_path: Path) -> None:
    record = compute_traffic(tmp_path)
    planted = None
    for path in sorted(record.glob("*.json")):
        exchange = json.loads(path.read_text())
        if planted is None and exchange["liveRequest"]["method"] == "put" and "/virtualMachines/" in \
                exchange["liveRequest"]["url"] and exchange["liveResponse"]["statusCode"] == "201":
            exchange["liveResponse"]["body"]["properties"]["priority"] = 7  # not a string
            exchange["liveResponse"]["body"]["properties"]["provisioningstate"] = "x"  # no such property
            path.write_text(json.dumps(exchange))
            planted = path
    assert planted is not None
    _, other = findings(oav(record, tmp_path / "oav.json"))
    assert any("INVALID_TYPE" in e for e in other) and any("OBJECT_ADDITIONAL_PROPERTIES" in e for e in other), other
