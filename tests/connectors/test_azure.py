"""The Azure connector: the real, unmodified azure-mgmt-compute, azure-mgmt-network and azure-identity (MSAL
underneath) against the project's fake Resource Manager and token endpoint over real TLS (tests/fakearm.py: no
Azure compute emulator exists). Real: the SDKs, their pipelines and retry policy, the TLS, the client-credentials
grant, the wire JSON. The fake: Azure itself, its rules as tests/fakearm.py states them. The contract suite,
the state table row by row (on the fake and as a pure table), the error table row by row, throttling, late
failures, orphans, quota and sizes."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

import azurespace
import pytest
from contract import ConnectorContract, by_name, spec
from fakearm import TYPES, Arm

from vcycle.connectors import azure
from vcycle.connectors.azure import AzureConnector, AzureMachinetype, classify, image_reference, vm_status
from vcycle.core.model import CloudMachine, CloudStatus
from vcycle.errors import CloudUnavailable, LaunchRejected, NoCapacity, QuotaExceeded, Throttled, Unauthorized

SIZE = "Standard_B1s"


def azure_spec(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("flavor", SIZE)
    kwargs.setdefault("image", azurespace.IMAGE)
    return spec(*args, **kwargs)


@pytest.fixture
def connector(arm: Arm, tmp_path: Path) -> AzureConnector:
    return azurespace.connector(arm, tmp_path / "space")


# (provisioning state/power state as the fake shows them) -> what the connector must make of them
STATE_ROWS = [("Creating/starting", CloudStatus.STARTING), ("Succeeded/starting", CloudStatus.STARTING),
              ("Succeeded/running", CloudStatus.RUNNING), ("Succeeded/stopping", CloudStatus.STOPPED),
              ("Succeeded/stopped", CloudStatus.STOPPED), ("Succeeded/deallocating", CloudStatus.STOPPED),
              ("Succeeded/deallocated", CloudStatus.STOPPED), ("Updating/running", CloudStatus.RUNNING),
              ("Migrating/running", CloudStatus.RUNNING), ("Failed/", CloudStatus.FAILED),
              ("Canceled/", CloudStatus.FAILED), ("Deleting/deallocating", CloudStatus.DELETING),
              ("Succeeded/", CloudStatus.UNKNOWN), ("Succeeded/hibernated", CloudStatus.UNKNOWN),
              ("Pending/", CloudStatus.UNKNOWN)]


@pytest.fixture
def cloud_tweak(arm: Arm) -> Any:
    def tweak(machine: CloudMachine, raw: str) -> None:
        provisioning, _, power = raw.partition("/")
        arm.set_power(machine.name, power or None, provisioning)  # type: ignore[arg-type]

    return tweak


@pytest.fixture(params=STATE_ROWS, ids=[row[0] for row in STATE_ROWS])
def state_row(request: pytest.FixtureRequest) -> tuple[str, CloudStatus]:
    return request.param  # type: ignore[no-any-return]


class TestAzureConnector(ConnectorContract):
    """The contract, with an Azure size and image in every spec."""

    @pytest.fixture
    def spec_defaults(self) -> dict[str, Any]:
        return {"flavor": SIZE, "image": azurespace.IMAGE}


@pytest.mark.parametrize(("provisioning", "power", "expected"),
                         [(*row[0].split("/"), row[1]) for row in STATE_ROWS] + [
                             ("succeeded", "running", CloudStatus.RUNNING), (None, None, CloudStatus.UNKNOWN),
                             ("Deleting", None, CloudStatus.DELETING), ("Creating", None, CloudStatus.STARTING)])
def test_state_table(provisioning: str | None, power: str | None, expected: CloudStatus) -> None:
    assert vm_status(provisioning, power or None) is expected


# --- what a machine is on Azure -------------------------------------------------------------------------------


def test_a_machine_is_a_tagged_nic_and_vm_with_custom_data_and_everything_goes_with_it(arm: Arm,
                                                                                      tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path, public_ip=True, os_disk_type="premium_lrs", os_disk_gb=40)
    user_data = b"#cloud-config\nruncmd: [[echo, pilot]]\n"
    made = found.create_machine(azure_spec(user_data=user_data))
    vm = arm.vm("vcycle-mt-contract01")
    assert vm is not None and made.id == vm["id"]
    assert base64.b64decode(vm["_custom_data"]) == user_data  # what the fake got; ARM never gives it back
    assert vm["tags"]["vcycle-space"] == "contract" and vm["tags"]["vcycle-request"] == "req-contract-01"
    properties = vm["properties"]
    assert properties["storageProfile"]["osDisk"]["name"] == "vcycle-mt-contract01-osdisk"
    assert properties["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert properties["storageProfile"]["osDisk"]["managedDisk"]["storageAccountType"] == "Premium_LRS"
    assert properties["storageProfile"]["imageReference"] == {
        "publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}
    assert properties["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] == "Delete"
    assert properties["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"] == azurespace.SSH_KEY
    [nic] = arm.of_kind("nic")
    [ip] = arm.of_kind("ip")
    assert nic["tags"]["vcycle-machine"] == ip["tags"]["vcycle-machine"] == "vcycle-mt-contract01"
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] == azurespace.SUBNET
    assert ip["properties"]["deleteOption"] == "Delete"
    assert arm.names("disk") == ["vcycle-mt-contract01-osdisk"]
    time.sleep(arm.op_seconds)
    assert by_name(found)["vcycle-mt-contract01"].status is CloudStatus.RUNNING
    found.delete_machine(made.id)
    time.sleep(arm.op_seconds)
    arm.settle()
    assert (arm.names("vm"), arm.names("nic"), arm.names("ip"), arm.names("disk")) == ([], [], [], [])


def test_nothing_waits_for_an_operation(arm: Arm, tmp_path: Path) -> None:
    """A create returns right after ARM's 201 and a delete after its 202: no status poll, no thread left."""
    import threading

    arm.op_seconds = 30
    found = azurespace.connector(arm, tmp_path)
    started = time.perf_counter()
    made = found.create_machine(azure_spec())
    found.delete_machine(made.id)
    assert time.perf_counter() - started < 5
    assert not [path for _, path in arm.requests if "/operations/" in path]
    assert not [t.name for t in threading.enumerate() if t.name.startswith("LROPoller")]


def test_spot_machinetypes_ask_for_spot_with_eviction_delete(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path, machinetypes={"mt": AzureMachinetype(spot=True)})
    found.create_machine(azure_spec())
    priced = azurespace.connector(arm, tmp_path, machinetypes={"mt": AzureMachinetype(spot=True, max_price=0.05)})
    priced.create_machine(azure_spec(name="vcycle-mt-priced0001", request="req-priced"))
    first, second = arm.vm("vcycle-mt-contract01"), arm.vm("vcycle-mt-priced0001")
    assert first is not None and second is not None
    assert (first["properties"]["priority"], first["properties"]["evictionPolicy"],
            first["properties"]["billingProfile"]) == ("Spot", "Delete", {"maxPrice": -1})
    assert second["properties"]["billingProfile"] == {"maxPrice": 0.05}
    time.sleep(arm.op_seconds)
    arm.evict("vcycle-mt-contract01")
    listed = by_name(found)
    assert "vcycle-mt-contract01" not in listed and "vcycle-mt-contract01-nic" not in arm.names("nic")


def test_zones_are_spread_fewest_of_ours_first_and_sizes_not_in_a_zone_are_refused(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path, zones=("1", "2", "3"))
    found.list_machines()
    for i in range(6):
        found.create_machine(azure_spec(name=f"vcycle-mt-zones0000{i}", request=f"req-z{i}"))
    zones = sorted(vm["zones"][0] for vm in arm.of_kind("vm"))
    assert zones == ["1", "1", "2", "2", "3", "3"]
    only_three = azurespace.connector(arm, tmp_path, zones=("3",))
    with pytest.raises(LaunchRejected, match="not offered in zones 3"):  # D8s_v3 is in zones 1 and 2 only
        only_three.create_machine(azure_spec(name="vcycle-mt-zonesbig00", request="req-big", flavor="Standard_D8s_v3"))


def test_an_offering_names_the_zone_and_the_capacity_type(arm: Arm, tmp_path: Path) -> None:
    """A machinetype's offering (zones, capacity_types) decides over the space's spreading: the VM is made in its
    zone, as Spot where it says spot; a size not offered in the zone is that offering's lack of capacity (the
    create falls through to the next), not a refusal of the machinetype."""
    found = azurespace.connector(arm, tmp_path, zones=("1", "2", "3"))
    found.list_machines()
    found.create_machine(azure_spec(name="vcycle-mt-offer00001", request="req-o1", zone="2", capacity="spot"))
    found.create_machine(azure_spec(name="vcycle-mt-offer00002", request="req-o2", zone="2", capacity="on-demand"))
    made = {vm["name"]: vm for vm in arm.of_kind("vm")}
    assert made["vcycle-mt-offer00001"]["zones"] == made["vcycle-mt-offer00002"]["zones"] == ["2"]
    assert made["vcycle-mt-offer00001"]["properties"]["priority"] == "Spot"
    assert "priority" not in made["vcycle-mt-offer00002"]["properties"]
    with pytest.raises(NoCapacity, match="not offered in zone 3"):  # D8s_v3 is in zones 1 and 2 only
        found.create_machine(azure_spec(name="vcycle-mt-offer00003", request="req-o3", flavor="Standard_D8s_v3",
                                        zone="3"))


def test_sizes_come_from_the_resource_skus_once_an_hour_and_unoffered_ones_are_refused(arm: Arm,
                                                                                    tmp_path: Path) -> None:
    clock = [1_000_000.0]
    found = azurespace.connector(arm, tmp_path)
    found.clock = lambda: clock[0]
    arm.unavailable.add("Standard_F2s_v2")
    flavors = found.flavors()
    assert flavors["Standard_D4s_v3"] == 4 and "Standard_F2s_v2" not in flavors
    assert found.sizes()["Standard_D4s_v3"].memory_gb == 16.0
    found.list_machines()
    found.flavors()
    assert sum("/skus" in path for _, path in arm.requests) == 1
    with pytest.raises(LaunchRejected, match="not offered"):
        found.create_machine(azure_spec(flavor="Standard_F2s_v2"))
    with pytest.raises(LaunchRejected, match="not offered"):
        found.create_machine(azure_spec(flavor="Standard_NoSuch"))
    assert arm.names("vm") == [] and arm.names("nic") == []
    clock[0] += 3601
    found.flavors()
    assert sum("/skus" in path for _, path in arm.requests) == 2


@pytest.mark.parametrize(("image", "reference"), [
    ("Canonical:ubuntu-24_04-lts:server:latest", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts",
                                                  "sku": "server", "version": "latest"}),
    ("image:/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/cernvm",
     {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/cernvm"}),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/g1/images/pilot/versions/1.2.3",
     {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/g1/images/pilot/versions/1.2.3"}),
    ("/CommunityGalleries/cern-1234/Images/cernvm/Versions/latest",
     {"communityGalleryImageId": "/CommunityGalleries/cern-1234/Images/cernvm/Versions/latest"}),
])
def test_image_references(image: str, reference: dict[str, str]) -> None:
    assert image_reference(image) == reference


@pytest.mark.parametrize("image", [None, "", "https://example.org/cernvm.img", "Canonical:ubuntu", "a:b::d"])
def test_images_that_are_not_azure_images_are_refused(image: str | None) -> None:
    with pytest.raises(LaunchRejected, match="not an Azure image"):
        image_reference(image)


def test_a_name_of_another_request_is_refused_even_unlisted_and_the_vm_left_alone(arm: Arm, tmp_path: Path) -> None:
    """The VM is created with If-None-Match: a create that did not see the VM in a listing never updates it."""
    azurespace.connector(arm, tmp_path).create_machine(azure_spec())
    fresh = azurespace.connector(arm, tmp_path)  # no listing: it does not know the VM exists
    with pytest.raises(LaunchRejected, match="another request"):
        fresh.create_machine(azure_spec(request="req-someone-else"))
    vm = arm.vm("vcycle-mt-contract01")
    assert vm is not None and vm["tags"]["vcycle-request"] == "req-contract-01"
    again = azurespace.connector(arm, tmp_path).create_machine(azure_spec())  # the same request: the same VM
    assert again.id == vm["id"] and len(arm.of_kind("vm")) == 1


# --- late failures, orphans -----------------------------------------------------------------------------------


def test_a_create_that_fails_later_leaves_a_failed_vm_listed_with_azures_reason(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path)
    arm.fault("PUT", "/virtualMachines/vcycle-mt-contract01", async_error={
        "code": "AllocationFailed", "message": "Allocation failed. We do not have sufficient capacity for the "
                                               "requested VM size in this region."})
    found.create_machine(azure_spec())  # accepted: 201
    time.sleep(arm.op_seconds)
    listed = by_name(found)["vcycle-mt-contract01"]
    assert listed.status is CloudStatus.FAILED
    assert "AllocationFailed: Allocation failed. We do not have sufficient capacity" in listed.detail
    found.delete_machine(listed.id)
    time.sleep(arm.op_seconds)
    arm.settle()
    assert arm.names("vm") == arm.names("nic") == arm.names("disk") == []


def test_orphans_of_ours_are_deleted_and_logged_young_and_foreign_ones_are_not(arm: Arm, tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = [time.time()]
    found = azurespace.connector(arm, tmp_path, public_ip=True, orphan_seconds=60)
    found.clock = lambda: clock[0]
    # a create that died after its NIC and IP: the VM never came
    arm.fault("PUT", "/virtualMachines/vcycle-mt-orphan0001", status=500, code="InternalServerError",
              message="boom", count=10)
    arm.fault("DELETE", "/networkInterfaces/vcycle-mt-orphan0001-nic", status=500, code="InternalServerError",
              message="boom", count=10)
    with pytest.raises(CloudUnavailable):
        found.create_machine(azure_spec(name="vcycle-mt-orphan0001", request="req-orphan"))
    arm.faults.clear()
    # and a machine whose VM was deleted elsewhere with deleteOption Detach: its NIC and disk stay
    found.create_machine(azure_spec(name="vcycle-mt-detached01", request="req-detached"))
    time.sleep(arm.op_seconds)
    vm = arm.vm("vcycle-mt-detached01")
    assert vm is not None
    with arm.lock:
        vm["properties"]["storageProfile"]["osDisk"]["deleteOption"] = "Detach"
        vm["properties"]["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] = "Detach"
        arm.settle()
        arm._remove_vm(vm)
    # a foreign NIC, and a young one of ours whose create may be under way
    arm.resources["/x/foreign-nic"] = {"name": "foreign-nic", "id": "/x/foreign-nic", "type": TYPES["nic"],
                                       "tags": {"vcycle-space": "other", "vcycle-machine": "m"},
                                       "properties": {"ipConfigurations": []}, "location": "westeurope"}
    assert sorted(arm.names("nic")) == ["foreign-nic", "vcycle-mt-detached01-nic", "vcycle-mt-orphan0001-nic"]
    found.list_machines()
    with caplog.at_level(logging.WARNING):
        found.delete_machine(found._id("Microsoft.Compute/virtualMachines", "no-such-vm"))  # sweeps: all young
    assert sorted(arm.names("nic")) == ["foreign-nic", "vcycle-mt-detached01-nic", "vcycle-mt-orphan0001-nic"]
    clock[0] += 120
    found.list_machines()
    found.delete_machine(found._id("Microsoft.Compute/virtualMachines", "no-such-vm"))
    arm.settle()
    assert arm.names("nic") == ["foreign-nic"]
    assert arm.names("disk") == []
    assert arm.names("ip") == []  # held by an orphan NIC deleted in the same sweep
    said = caplog.text
    assert "deleted orphan NIC vcycle-mt-orphan0001-nic" in said and "deleted orphan disk vcycle-mt-detached01-osdisk" \
        in said


def test_a_listing_alone_deletes_nothing(arm: Arm, tmp_path: Path) -> None:
    """`vcycle plan` lists too: orphans go only at a create or delete."""
    found = azurespace.connector(arm, tmp_path, orphan_seconds=1)
    arm.fault("PUT", "/virtualMachines/", status=500, code="InternalServerError", message="boom", count=10)
    arm.fault("DELETE", "/networkInterfaces/", status=500, code="InternalServerError", message="boom", count=10)
    with pytest.raises(CloudUnavailable):
        found.create_machine(azure_spec())
    arm.faults.clear()
    time.sleep(1.1)
    deletes = [m for m, _ in arm.requests].count("DELETE")
    found.list_machines()
    found.list_machines()
    assert arm.names("nic") == ["vcycle-mt-contract01-nic"]
    assert [m for m, _ in arm.requests].count("DELETE") == deletes


def test_a_refused_create_takes_its_nic_back_at_once(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path)
    arm.limits["family"] = 0
    with pytest.raises(QuotaExceeded, match="standardBSFamily Cores quota"):
        found.create_machine(azure_spec())
    assert arm.names("nic") == [] and arm.names("vm") == []


# --- quota ----------------------------------------------------------------------------------------------------


def test_capacity_is_the_quota_less_what_vms_outside_the_group_hold(arm: Arm, tmp_path: Path) -> None:
    arm.limits.update(cores=20, family=12)
    arm.add_vm(azurespace.SUBSCRIPTION, "elsewhere", "theirs", "westeurope", "Standard_D4s_v3")  # 4 outside
    arm.add_vm(azurespace.SUBSCRIPTION, azurespace.GROUP, "foreign-here", "westeurope", "Standard_B2s")  # 2 inside
    found = azurespace.connector(arm, tmp_path, flavors=("Standard_D2s_v3",))
    listed = by_name(found)
    assert listed["foreign-here"].processors == 2 and listed["foreign-here"].owner is None
    assert "theirs" not in listed
    # regional: 20 - 4 outside = 16; DSv3 family: 12 - 4 outside = 8
    assert found.capacity() == 8
    regional = azurespace.connector(arm, tmp_path, flavors=("Standard_B1s",))
    regional.list_machines()
    assert regional.capacity() == 12  # regional: 16; BS family: 12, its 2 vCPUs all in the group
    spot = azurespace.connector(arm, tmp_path, machinetypes={"mt": AzureMachinetype(spot=True)})
    spot.list_machines()
    assert spot.capacity() == 100  # low-priority vCPUs


def test_quota_exceeded_on_the_put_is_quota_exceeded(arm: Arm, tmp_path: Path) -> None:
    arm.limits["cores"] = 1
    found = azurespace.connector(arm, tmp_path)
    found.create_machine(azure_spec())
    with pytest.raises(QuotaExceeded, match="Total Regional Cores quota"):
        found.create_machine(azure_spec(name="vcycle-mt-second0001", request="req-2"))


# --- errors, throttling ---------------------------------------------------------------------------------------

# (HTTP status, ARM code, message, detail codes) -> vcycle's class
ERROR_ROWS = [
    (409, "OperationNotAllowed", "Operation could not be completed as it results in exceeding approved "
                                 "standardDSv3Family Cores quota.", ("QuotaExceeded",), QuotaExceeded),
    (409, "OperationNotAllowed", "exceeding approved Total Regional Cores quota", (), QuotaExceeded),
    (409, "QuotaExceeded", "Quota exceeded", (), QuotaExceeded),
    (409, "SkuNotAvailable", "The requested VM size is currently not available in location", (), NoCapacity),
    (409, "SkuNotAvailableInZone", "The requested VM size is not available in zone 2", (), NoCapacity),
    (200, "AllocationFailed", "Allocation failed. We do not have sufficient capacity", (), NoCapacity),
    (409, "ZonalAllocationFailed", "Allocation failed in zone 1", (), NoCapacity),
    (409, "OverconstrainedAllocationRequest", "Allocation failed: constraints", (), NoCapacity),
    (409, "OverconstrainedZonalAllocationRequest", "Allocation failed in zone 1: constraints", (), NoCapacity),
    (200, "AllocationTimedOut", "Allocation did not complete in time", (), NoCapacity),
    (403, "AuthorizationFailed", "The client does not have authorization to perform action", (), Unauthorized),
    (401, "InvalidAuthenticationToken", "The access token is invalid.", (), Unauthorized),
    (401, "ExpiredAuthenticationToken", "The access token expiry", (), Unauthorized),
    (429, "TooManyRequests", "The request is being throttled.", (), Throttled),
    (429, "OperationNotAllowed", "The server rejected the request because too many requests", (), Throttled),
    (400, "InvalidParameter", "Custom data in OSProfile must be in Base64", (), LaunchRejected),
    (400, "InvalidResourceReference", "Resource referenced by resource was not found", (), LaunchRejected),
    (404, "PlatformImageNotFound", "The platform image is not available", (), LaunchRejected),
    (404, "ResourceGroupNotFound", "Resource group 'vcycle-rg' could not be found.", (), Unauthorized),
    (409, "OperationNotAllowedQuotaExceeded", "exceeding quota", (), QuotaExceeded),
    (409, "SubscriptionQuotaExceeded", "subscription quota exceeded", (), QuotaExceeded),
    (403, "AuthenticationFailed", "Authentication failed", (), Unauthorized),
    (401, "InvalidAuthenticationTokenTenant", "The access token is from the wrong issuer", (), Unauthorized),
    (403, "LinkedAuthorizationFailed", "The client has permission on the VM but not on its NIC", (), Unauthorized),
    (404, "SubscriptionNotFound", "The subscription could not be found.", (), Unauthorized),
    (400, "BadRequest", "Bad request", (), LaunchRejected),
    (404, "GalleryImageNotFound", "The gallery image was not found", (), LaunchRejected),
    (404, "ImageNotFound", "The image was not found", (), LaunchRejected),
    (400, "InvalidTemplate", "The template is not valid", (), LaunchRejected),
    (400, "InvalidRequestContent", "The request content was invalid", (), LaunchRejected),
    (400, "InvalidRequestFormat", "Cannot parse the request", (), LaunchRejected),
    (400, "LinkedInvalidPropertyId", "Property id is invalid", (), LaunchRejected),
    (400, "InvalidLinkedResource", "The linked resource is invalid", (), LaunchRejected),
    (400, "NetworkInterfaceMustHaveAtLeastOneIpConfiguration", "no ip configuration", (), LaunchRejected),
    (400, "VMMarketplaceInvalidInput", "Creating a VM from a Marketplace image needs a plan", (), LaunchRejected),
    (400, "MarketplacePurchaseEligibilityFailed", "Marketplace purchase eligibilty check failed", (),
     LaunchRejected),
    (400, "ResourcePurchaseValidationFailed", "User failed validation to purchase resources", (), LaunchRejected),
    (429, "OperationThrottled", "The operation was throttled", (), Throttled),
    (429, "SubscriptionRequestsThrottled", "Number of requests for subscription exceeded the limit", (), Throttled),
    (409, "RetryableError", "A retryable error occurred", (), Throttled),
    (500, "InternalServerError", "An internal execution error occurred.", (), CloudUnavailable),
    (503, "ServiceUnavailable", "The service is unavailable", (), CloudUnavailable),
]


@pytest.mark.parametrize(("status", "code", "message", "details", "expected"), ERROR_ROWS,
                         ids=[f"{r[0]}-{r[1]}-{i}" for i, r in enumerate(ERROR_ROWS)])
def test_error_table(status: int, code: str, message: str, details: tuple[str, ...], expected: type) -> None:
    assert classify(status, code, message, details) is expected


def test_every_mapped_code_has_a_row() -> None:
    """A code added to a class without a row here fails: each mapping is tested, not only listed."""
    from vcycle.connectors import azure

    rows = {r[1] for r in ERROR_ROWS} | {d for r in ERROR_ROWS for d in r[3]}
    mapped = (azure.QUOTA_CODES | azure.CAPACITY_CODES | azure.AUTH_CODES | azure.REJECT_CODES
              | azure.THROTTLE_CODES)
    assert sorted(mapped - rows) == []


@pytest.mark.parametrize(("status", "code", "message", "details", "expected"),
                         [r for r in ERROR_ROWS if r[0] not in (200, 429, 503, 500)],
                         ids=[f"{r[0]}-{r[1]}" for r in ERROR_ROWS if r[0] not in (200, 429, 503, 500)])
def test_errors_through_the_sdk(arm: Arm, tmp_path: Path, status: int, code: str, message: str,
                                details: tuple[str, ...], expected: type) -> None:
    """Each ARM error, as the SDK raises it on the VM's PUT, becomes vcycle's class (and nothing is left)."""
    found = azurespace.connector(arm, tmp_path)
    arm.fault("PUT", "/virtualMachines/", status=status, code=code, message=message,
              details=[{"code": d, "message": message} for d in details] or None)
    with pytest.raises(expected) as raised:
        found.create_machine(azure_spec())
    assert code in str(raised.value) and "Bearer" not in str(raised.value)
    assert arm.names("vm") == arm.names("nic") == []


def test_a_429_is_not_slept_and_the_space_makes_no_call_until_its_retry_after(arm: Arm, tmp_path: Path) -> None:
    clock = [time.time()]
    found = azurespace.connector(arm, tmp_path)
    found.clock = lambda: clock[0]
    found.list_machines()
    arm.fault("GET", "/virtualMachines", status=429, code="TooManyRequests", retry_after=600)
    started = time.perf_counter()
    with pytest.raises(Throttled, match="Retry-After 600") as raised:
        found.list_machines()
    assert raised.value.retry_after == 600  # the space's Holds slow it by as much (vcycle/loop/holds.py)
    assert time.perf_counter() - started < 3  # the SDK would have slept 600 s, up to ten times
    asked = len(arm.requests)
    clock[0] += 100
    for call in (found.list_machines, lambda: found.create_machine(azure_spec()),
                 lambda: found.delete_machine(found._id("Microsoft.Compute/virtualMachines", "x"))):
        with pytest.raises(Throttled, match="no call to Azure until") as raised:
            call()
        assert raised.value.retry_after == pytest.approx(500)
    assert len(arm.requests) == asked
    clock[0] += 601
    assert found.list_machines() == []


def test_a_5xx_is_retried_briefly_within_the_call(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path)
    arm.fault("GET", "/resourceGroups/vcycle-rg/providers/Microsoft.Compute/virtualMachines", status=503,
              code="ServiceUnavailable", message="try again", retry_after=1)
    assert found.list_machines() == []


def test_bad_credentials_are_cloud_unavailable_and_say_which_without_the_secret(arm: Arm, tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    wrong = azurespace.connector(arm, tmp_path)
    arm.client_secret = "the-real-one-changed"
    with caplog.at_level(logging.DEBUG), pytest.raises(Unauthorized, match="AADSTS7000215") as raised:
        wrong.list_machines()
    assert "s3cret-value" not in str(raised.value) and "s3cret-value" not in caplog.text
    arm.client_secret = "s3cret-value"
    arm.secret_expired = True
    with pytest.raises(Unauthorized, match="client secret has expired"):
        azurespace.connector(arm, tmp_path).list_machines()


def test_a_token_arm_does_not_take_is_cloud_unavailable(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path)
    found.list_machines()
    arm.tokens.clear()  # revoked
    with pytest.raises(CloudUnavailable, match="InvalidAuthenticationToken"):
        found.list_machines()


def test_an_endpoint_without_the_ca_is_refused(arm: Arm, tmp_path: Path) -> None:
    found = azurespace.connector(arm, tmp_path, ca_file=None)
    with pytest.raises(CloudUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        found.list_machines()


def test_an_expiring_secret_is_warned_about(arm: Arm, tmp_path: Path) -> None:
    from datetime import UTC, date, datetime

    found = azurespace.connector(arm, tmp_path, client_secret_expires=date(2027, 1, 10))
    assert found.notices(datetime(2026, 12, 1, tzinfo=UTC)) == []
    assert found.notices(datetime(2026, 12, 30, tzinfo=UTC)) == [
        "the Azure client secret of this space expires on 2027-01-10, in 11 days"]
    assert found.notices(datetime(2027, 2, 1, tzinfo=UTC)) == [
        "the Azure client secret of this space expired on 2027-01-10"]


def test_a_too_large_user_data_is_refused_before_any_call(arm: Arm, tmp_path: Path) -> None:
    import os

    found = azurespace.connector(arm, tmp_path)
    asked = len(arm.requests)
    with pytest.raises(LaunchRejected, match="65535 bytes"):
        found.create_machine(azure_spec(user_data=os.urandom(70000)))
    assert len(arm.requests) == asked
    assert azure.MAX_USER_DATA == 65535 and len(base64.b64encode(b"x" * 65535)) == 87380


def test_the_listing_follows_next_links(arm: Arm, tmp_path: Path) -> None:
    arm.page_size = 2
    found = azurespace.connector(arm, tmp_path)
    for i in range(5):
        found.create_machine(azure_spec(name=f"vcycle-mt-paged0000{i}", request=f"req-p{i}"))
    assert len(by_name(found)) == 5


def check_config(tmp_path: Path, space: str, machinetype: str) -> str:
    import subprocess
    import sys

    conf = tmp_path / "vcycle.conf"
    conf.write_text(f"""[settings]
state_url = sqlite:///{tmp_path}/state.db

[space az]
api = azure
resource_group = rg
subnet_id = {azurespace.SUBNET}
processors_limit = 4
{space}

[machinetype az pilot]
user_data = pilot-container
backoff_seconds = 0
fizzle_seconds = 0
{machinetype}
""")
    done = subprocess.run([sys.executable, "-m", "vcycle.cli", "check-config", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    return done.stderr.replace(f"{conf}: ", "")


def test_configuration_errors_name_the_file_section_and_key(tmp_path: Path) -> None:
    said = check_config(tmp_path, "subscription_id = not-a-guid\nlocation = West Europe",
                        "root_image = https://example.org/cernvm.img\nspot = maybe")
    for line in ("[space az] subscription_id: 'not-a-guid' is not a subscription id",
                 "[space az] location: 'West Europe' is not a location name",
                 "[space az] ssh_public_key_file: is required",
                 "[machinetype az pilot] root_image: is not an Azure image", "[machinetype az pilot] spot: 'maybe'",
                 "[machinetype az pilot] flavor_names: is required for Azure"):
        assert line in said, (line, said)


def test_credentials_that_do_not_go_together_are_configuration_errors(tmp_path: Path) -> None:
    said = check_config(tmp_path, f"subscription_id = {azurespace.SUBSCRIPTION}\nlocation = westeurope\n"
                                  "ssh_public_key_file = /etc/vcycle/id.pub\nclient_id = app\n"
                                  "client_secret_file = /etc/vcycle/azure-secret\n"
                                  "client_certificate_file = /etc/vcycle/azure.pem",
                        f"root_image = {azurespace.IMAGE}\nflavor_names = Standard_B1s")
    for line in ("[space az] client_certificate_file: give client_secret_file or client_certificate_file, not both",
                 "[space az] tenant_id: is required for a service principal"):
        assert line in said, (line, said)


def test_a_service_principal_with_a_certificate_gets_its_token(arm: Arm, tmp_path: Path) -> None:
    """azure-identity's CertificateCredential signs a client assertion with the certificate's key; the fake's
    token endpoint checks its signature against the certificate registered for the application."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcycle")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = tmp_path / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + certificate.public_bytes(serialization.Encoding.PEM))
    found = azurespace.connector(arm, tmp_path, client_secret_file=None, client_certificate_file=str(pem))
    with pytest.raises(CloudUnavailable, match="AADSTS700027"):  # not registered yet
        found.list_machines()
    arm.client_certificate = certificate
    assert azurespace.connector(arm, tmp_path, client_secret_file=None,
                                client_certificate_file=str(pem)).list_machines() == []
