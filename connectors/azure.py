"""``api = azure``: Azure Resource Manager through the official SDKs (``pip install vcycle[azure]``:
azure-mgmt-compute, azure-mgmt-network, azure-identity).

A space is one resource group of one subscription in one location. Credentials come from azure-identity: a
service principal (``tenant_id``, ``client_id`` and ``client_secret_file`` or ``client_certificate_file``), a
managed identity, or its default chain; they are never logged, and a secret's expiry (``client_secret_expires``,
which Azure shows when the secret is made) is warned about as OpenStack's application credentials are.

A machine is a NIC in an existing subnet (``subnet_id``), an optional public IP, and a VM with the rendered
user-data as ``customData`` (fitted to Azure's 65,535 bytes before any call), its OS disk named
``NAME-osdisk``; NIC, IP and disk go with the VM (``deleteOption: Delete``). Tags make a machine ours, on the VM,
NIC and IP (and on the OS disk, which Azure does not tag, once its VM is listed). The VM is created with
``If-None-Match: *``: a retried create never updates a VM, and a name of another request is refused.

Nothing waits for a long-running operation: creates and deletes are started (``polling=False``) and the next
listing shows their outcome. One listing is two paged calls: the resource group's VMs, and the subscription's
power states (``statusOnly``). A VM whose create failed late (AllocationFailed, OSProvisioningTimedOut) is
listed Failed with Azure's code and message, and deleted as every failed machine is.

Throttling: the SDK would sleep a 429's Retry-After, uncapped, up to ten times; here a 429 (or any answer asking
to wait longer than a few seconds) is not retried, and the space makes no call until the time Azure gave
(kept in the process: cron mode starts afresh).

Orphans (the classic Azure leak: NICs, IPs and disks left by creates that failed half-way or VMs deleted
elsewhere): at the first create or delete after a listing, at most every ``orphan_seconds``, a NIC or IP tagged
for this space and an unattached ``vcycle-...-osdisk`` disk, with no VM of their machine's name and older than
``orphan_seconds``, are deleted, and logged.

Capacity: the location's regional vCPU quota (low-priority vCPUs for a space of spot machinetypes only) and the
quota families of the sizes the machinetypes name, from the usage API, less what VMs outside this resource group
hold. Sizes (vCPUs, memory, zones, restrictions) come from the resource SKUs API, asked once an hour.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from vcycle import __version__
from vcycle.connectors.base import ConnectorPlugin, fit_user_data
from vcycle.core.model import ON_DEMAND, SPOT, TAG_SPACE, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import REQUIRED, boolean, choice, integer, key, matching, number, options_of, text, words
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, NoCapacity, QuotaExceeded, Throttled, Unauthorized

log = logging.getLogger(__name__)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a date (YYYY-MM-DD)") from None


_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SUBNET = r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+"


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureSpace:
    """The keys of an ``api = azure`` space."""

    subscription_id: str = key(matching(_GUID, "a subscription id (a GUID)"), REQUIRED, "the subscription")
    resource_group: str = key(matching(r"[-\w._()]{1,90}", "a resource group name"), REQUIRED,
                              "the resource group machines are made in (it must exist)")
    location: str = key(matching(r"[a-z0-9]+", "a location name (westeurope, eastus2, ...)"), REQUIRED,
                        "the location (region) machines are made in")
    subnet_id: str = key(matching(_SUBNET, "a subnet's resource id (/subscriptions/.../virtualNetworks/NET/"
                                           "subnets/SUBNET)"), REQUIRED, "the existing subnet of the machines' NICs")
    cloud: str = key(choice("public", "china", "usgovernment"), "public", "Azure's cloud: public, china, usgovernment")
    tenant_id: str | None = key(text, None, "the service principal's tenant (Entra ID directory) id")
    client_id: str | None = key(text, None, "the service principal's application (client) id")
    client_secret_file: str | None = key(text, None, "a file holding the service principal's client secret")
    client_certificate_file: str | None = key(text, None, "a PEM file with the service principal's certificate and "
                                                          "private key (instead of a secret)")
    client_secret_expires: date | None = key(_day, None, "when the client secret expires (YYYY-MM-DD, as Azure "
                                                         "showed it): warned about before")
    credential_warning_days: int = key(integer(0), 14, "warn this many days before the secret expires; 0 = no")
    managed_identity: bool = key(boolean, False, "use this host's managed identity")
    managed_identity_client_id: str | None = key(text, None, "a user-assigned managed identity's client id")
    base_url: str | None = key(matching(r"https://\S+", "an https URL"), None,
                               "the Resource Manager endpoint, where not the cloud's own (Azure Stack Hub)")
    authority: str | None = key(matching(r"https://\S+", "an https URL"), None,
                                "the Entra ID endpoint, where not the cloud's own")
    ca_file: str | None = key(text, None, "CA certificates to trust for the endpoints (default the system's)")
    zones: tuple[str, ...] = key(words, (), "availability zones to spread machines over, fewest of ours first")
    public_ip: bool = key(boolean, False, "give each machine a public IP (Standard, static)")
    admin_username: str = key(matching(r"[a-z_][a-z0-9_-]{0,31}", "a Linux user name"), "vcycle",
                              "the machines' administrator (Azure requires one)")
    ssh_public_key_file: str = key(text, REQUIRED, "the administrator's SSH public key (Azure requires a key or a "
                                                   "password; vcycle never uses it)")
    os_disk_type: str | None = key(choice("standard_lrs", "standardssd_lrs", "premium_lrs"), None,
                                   "the OS disk's storage type; default the image's")
    os_disk_gb: int | None = key(integer(1, 4095), None, "the OS disk's size; default the image's")
    orphan_seconds: int = key(integer(1, 86400), 300, "NICs, IPs and disks of ours with no VM are deleted once this "
                                                      "old, looked for at most this often")


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureMachinetype:
    """The keys an ``api = azure`` space adds to its machinetypes."""

    spot: bool = key(boolean, False, "Azure Spot VMs (evictionPolicy Delete: gone when Azure takes them back)")
    max_price: float | None = key(number(-1.0), None, "the highest Spot price per hour; -1 (the default) = up to the "
                                                      "on-demand price")


CLOUDS = {"public": ("https://management.azure.com", "https://login.microsoftonline.com"),
          "china": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
          "usgovernment": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us")}
MAX_USER_DATA = 65535  # bytes: base64 of it is ARM's 87,380 characters of customData
SIZES_SECONDS = 3600
LIST_API_VERSION = "2024-07-01"  # of the listings read as JSON: every field read is there since 2021-11-01
MAX_WAIT = 5.0  # seconds: an answer asking to wait longer is not retried within the call
TAG_MACHINE = "vcycle-machine"  # on NICs and IPs: the machine they were made for
TAG_CREATED = "vcycle-created"  # on NICs and IPs: when (unix time), so that young ones are never taken for orphans
NAME = re.compile(r"vcycle-[a-z0-9][a-z0-9_.-]*-[a-z0-9]{10}")

# (provisioning state, power state) -> ours. Provisioning first: Failed, Canceled and Deleting say it all.
PROVISIONING = {"failed": CloudStatus.FAILED, "canceled": CloudStatus.FAILED, "deleting": CloudStatus.DELETING,
                "creating": CloudStatus.STARTING}
POWER = {"starting": CloudStatus.STARTING, "running": CloudStatus.RUNNING, "stopping": CloudStatus.STOPPED,
         "stopped": CloudStatus.STOPPED, "deallocating": CloudStatus.STOPPED, "deallocated": CloudStatus.STOPPED}
SETTLED = ("succeeded", "updating", "migrating")  # provisioning states in which the power state tells

QUOTA_CODES = {"QuotaExceeded", "OperationNotAllowedQuotaExceeded", "SubscriptionQuotaExceeded"}
# This offering (size, zone, spot) has no room now; another may: the create falls through, the offering cools.
CAPACITY_CODES = {"AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
                  "OverconstrainedZonalAllocationRequest", "SkuNotAvailableInZone", "AllocationTimedOut",
                  "SkuNotAvailable"}
AUTH_CODES = {"AuthorizationFailed", "InvalidAuthenticationToken", "ExpiredAuthenticationToken", "AuthenticationFailed",
              "LinkedAuthorizationFailed", "InvalidAuthenticationTokenTenant", "SubscriptionNotFound",
              "ResourceGroupNotFound"}
REJECT_CODES = {"InvalidParameter", "InvalidResourceReference", "ImageNotFound",
                "PlatformImageNotFound", "InvalidTemplate", "BadRequest", "InvalidRequestContent",
                "InvalidRequestFormat", "GalleryImageNotFound", "LinkedInvalidPropertyId", "InvalidLinkedResource",
                "NetworkInterfaceMustHaveAtLeastOneIpConfiguration", "VMMarketplaceInvalidInput",
                "MarketplacePurchaseEligibilityFailed", "ResourcePurchaseValidationFailed"}
THROTTLE_CODES = {"TooManyRequests", "OperationThrottled", "RetryableError", "SubscriptionRequestsThrottled"}


def vm_status(provisioning: str | None, power: str | None) -> CloudStatus:
    """One VM's state in vcycle's terms, from its provisioning state and its power state (UNKNOWN otherwise)."""
    settled = (provisioning or "").lower()
    if settled in PROVISIONING:
        return PROVISIONING[settled]
    if settled in SETTLED:
        return POWER.get((power or "").lower(), CloudStatus.UNKNOWN)
    return CloudStatus.UNKNOWN


def image_reference(image: str | None) -> dict[str, str]:
    """The imageReference of a root_image: an URN (publisher:offer:sku:version), or the resource id of a managed
    image or of a gallery image (a version, or the image for its latest); LaunchRejected otherwise."""
    name = (image or "").removeprefix("image:")
    if name.lower().startswith("/subscriptions/"):
        return {"id": name}
    if name.lower().startswith("/communitygalleries/"):
        return {"communityGalleryImageId": name}
    if name.lower().startswith("/sharedgalleries/"):
        return {"sharedGalleryImageId": name}
    parts = name.split(":")
    if len(parts) == 4 and all(parts):
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
    raise LaunchRejected(f"root_image {image!r} is not an Azure image: publisher:offer:sku:version, or the "
                         "resource id of a managed image or gallery image")


@dataclass(frozen=True, slots=True)
class Size:
    """One VM size as the resource SKUs API gives it for the location."""

    name: str
    processors: int
    memory_gb: float
    family: str
    zones: frozenset[str]
    restricted: bool  # not offered in the location to this subscription
    restricted_zones: frozenset[str] = frozenset()

    def offered(self, zone: str | None) -> bool:
        return not self.restricted and (zone is None or (zone in self.zones and zone not in self.restricted_zones))


def _word(value: Any) -> str:
    """An SDK value as ARM's word (the SDK's str-enums print as their class's member otherwise)."""
    return str(getattr(value, "value", value) or "")


def sizes_of(skus: Any, location: str) -> dict[str, Size]:
    """The VM sizes of a resource SKUs listing, for ``location``."""
    table: dict[str, Size] = {}
    for sku in skus:
        if _word(sku.resource_type).lower() != "virtualmachines":
            continue
        capabilities = {c.name: c.value for c in sku.capabilities or ()}
        zones = frozenset(z for info in sku.location_info or () if _word(info.location).lower() == location
                          for z in info.zones or ())
        restricted, restricted_zones = False, set[str]()
        for restriction in sku.restrictions or ():
            if _word(restriction.type).lower() == "location":
                restricted = True
            elif _word(restriction.type).lower() == "zone":
                info = restriction.restriction_info
                restricted_zones.update((info.zones if info is not None else None) or ())
        try:
            processors = int(capabilities.get("vCPUs") or 0)
            memory = float(capabilities.get("MemoryGB") or 0)
        except ValueError:
            continue
        table[sku.name] = Size(sku.name, processors, memory, _word(sku.family), zones, restricted,
                               frozenset(restricted_zones))
    return table


def _time(value: Any) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def _retry_after(error: Any) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def classify(status: int, code: str, message: str, details: tuple[str, ...] = ()) -> type[Exception]:
    """vcycle's error class for an ARM error answer (its HTTP status, error code, message and details' codes)."""
    codes = {code, *details}
    if status == 429 or codes & THROTTLE_CODES:
        return Throttled
    if codes & CAPACITY_CODES:
        return NoCapacity
    if codes & QUOTA_CODES or (code == "OperationNotAllowed" and "quota" in message.lower()):
        return QuotaExceeded
    if status in (401, 403) or codes & AUTH_CODES:
        return Unauthorized
    if codes & REJECT_CODES:
        return LaunchRejected
    return CloudUnavailable


class AzureConnector:
    """One resource group of one subscription, through azure-mgmt-compute and azure-mgmt-network."""

    api = "azure"
    max_user_data_bytes = MAX_USER_DATA

    def __init__(self, compute: Any, network: Any, space: str, options: AzureSpace, *,
                 machinetypes: Mapping[str, AzureMachinetype] | None = None, flavors: tuple[str, ...] = (),
                 ssh_key: str = "", clock: Any = time.time) -> None:
        self.compute = compute
        self.network = network
        self.space = space
        self.options = options
        self.group = options.resource_group
        self.location = options.location
        self.machinetypes = dict(machinetypes or {})
        self.wanted_sizes = flavors  # the sizes the machinetypes name (their quota families count)
        self.ssh_key = ssh_key
        self.clock = clock
        self._lock = threading.Lock()
        self._by_name: dict[str, CloudMachine] = {}
        self._listed: set[str] = set()  # every VM name of the last listing and created since
        self._zone_counts: dict[str, int] = dict.fromkeys(options.zones, 0)
        self._sizes: tuple[float, dict[str, Size]] | None = None
        self._hold: tuple[float, str] | None = None  # (until, why): no call before then
        self._tidy_due = False
        self._tidied_at = float("-inf")
        self._expiry_logged: date | None = None

    # --- calls, errors, throttling ------------------------------------------------------------

    def _held(self, what: str) -> None:
        with self._lock:
            hold = self._hold
        if hold is not None and self.clock() < hold[0]:
            until = datetime.fromtimestamp(hold[0], UTC)
            raise Throttled(f"{what}: not asked: {hold[1]}; this space makes no call to Azure until "
                            f"{until:%H:%M:%S} UTC", retry_after=hold[0] - self.clock())

    @contextmanager
    def _mapped(self, what: str, *, creating: bool = False) -> Iterator[None]:
        """azure-core's and azure-identity's errors -> vcycle's, ARM's error codes deciding (``classify``); a
        throttling answer holds every call of the space until its Retry-After."""
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        try:
            yield
        except ClientAuthenticationError as exc:  # azure-identity's failures, and ARM's 401
            said = " ".join(str(getattr(exc, "message", None) or exc).split())
            found = re.search(r"AADSTS\d+", said)
            if found and found.group() == "AADSTS7000222":
                why = "the service principal's client secret has expired (AADSTS7000222): make a new one"
            elif found:
                why = f"Entra ID refused the credentials ({found.group()})"
            elif exc.error is not None and exc.error.code:
                why = f"Azure refused the credentials ({exc.error.code})"
            else:
                why = f"no token for Azure: {said[:300]}"
            raise Unauthorized(f"{what}: {why}") from exc
        except HttpResponseError as exc:
            error = exc.error
            code = str(getattr(error, "code", None) or "")
            message = " ".join(str(getattr(error, "message", None) or exc.reason or "").split())[:400]
            details = tuple(str(d.code) for d in (getattr(error, "details", None) or ()) if d.code)
            status = int(exc.status_code or 0)
            said = f"{what}: {code or status}: {message}"
            kind = classify(status, code, message, details)
            if kind is Throttled:
                wait = _retry_after(exc)
                wait = 30.0 if wait is None else min(wait, 3600.0)
                with self._lock:
                    self._hold = (self.clock() + wait, f"Azure throttled the space (HTTP {status}, Retry-After "
                                                       f"{wait:g} s)")
                until = datetime.fromtimestamp(self._hold[0], UTC)
                said += f" (Retry-After {wait:g} s: this space makes no call to Azure until {until:%H:%M:%S} UTC)"
                log.warning("space=%s Azure throttled %s: HTTP %d, Retry-After %g s: no call before then",
                            self.space, what, status, wait)
                raise Throttled(said, retry_after=wait) from exc
            if kind in (LaunchRejected, NoCapacity, QuotaExceeded) and not creating:
                kind = CloudUnavailable
            raise kind(said) from exc
        except AzureError as exc:  # no answer: connection, timeout, TLS
            said = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
            raise CloudUnavailable(f"{what}: no answer from Azure: {said}") from exc

    # --- sizes ------------------------------------------------------------------------------

    def sizes(self) -> dict[str, Size]:
        """The location's VM sizes, from the resource SKUs API at most once an hour."""
        now = self.clock()
        with self._lock:
            known = self._sizes
        if known is not None and now - known[0] < SIZES_SECONDS:
            return known[1]
        self._held("list resource SKUs")
        with self._mapped("list resource SKUs"):
            table = sizes_of(self.compute.resource_skus.list(filter=f"location eq '{self.location}'"), self.location)
        with self._lock:
            self._sizes = (now, table)
        return table

    def flavors(self) -> Mapping[str, int]:
        return {name: size.processors for name, size in self.sizes().items() if not size.restricted}

    # --- listing ----------------------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        self._held("list virtual machines")
        group = f"/subscriptions/{self.options.subscription_id}/resourceGroups/{self.group}"
        vms = self._pages("list virtual machines", f"{group}/providers/Microsoft.Compute/virtualMachines")
        prefix = f"{group}/".lower()
        views = {str(vm.get("id")).lower(): (vm.get("properties") or {}).get("instanceView")
                 for vm in self._pages("list power states", f"/subscriptions/{self.options.subscription_id}/"
                                       "providers/Microsoft.Compute/virtualMachines", statusOnly="true")
                 if str(vm.get("id")).lower().startswith(prefix)}
        sizes = self.sizes()
        machines = [self._machine(vm, views.get(str(vm.get("id")).lower()), sizes) for vm in vms]
        with self._lock:
            self._by_name = {m.name: m for m in machines}
            self._listed = set(self._by_name)
            counts = dict.fromkeys(self.options.zones, 0)
            for m in machines:
                if m.owner is not None and m.owner.space == self.space and m.zone in counts:
                    counts[m.zone] += 1
            self._zone_counts = counts
            self._tidy_due = True
        return machines

    def _pages(self, what: str, path: str, **query: str) -> list[dict[str, Any]]:
        """Every item of an ARM listing as ARM's JSON, ``nextLink`` followed: through the SDK's client and its
        pipeline (token, retries, TLS), without its models, which cost more to build than the rest of a cycle."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        items: list[dict[str, Any]] = []
        request = HttpRequest("GET", path, params={"api-version": LIST_API_VERSION, **query})
        with self._mapped(what):
            while True:
                response = self.compute.send_request(request)
                if response.status_code >= 400:
                    raise HttpResponseError(response=response, error_format=ARMErrorFormat)
                try:
                    page = response.json()
                    items += page.get("value") or []
                except (ValueError, AttributeError) as exc:
                    raise CloudUnavailable(f"{what}: the answer is not ARM's JSON") from exc
                link = page.get("nextLink")
                if not link:
                    return items
                request = HttpRequest("GET", str(link))

    def _machine(self, vm: Mapping[str, Any], view: Mapping[str, Any] | None, sizes: Mapping[str, Size]
                 ) -> CloudMachine:
        """One VM of a listing (ARM's JSON), with its instance view's statuses if known."""
        properties = vm.get("properties") or {}
        provisioning = str(properties.get("provisioningState") or "")
        power, failure = None, ""
        for status in (view or {}).get("statuses") or ():
            code = str(status.get("code") or "")
            if code.startswith("PowerState/"):
                power = code.split("/", 1)[1]
            elif code.lower().startswith("provisioningstate/failed/"):
                failure = f"{code.split('/', 2)[2]}: {' '.join(str(status.get('message') or '').split())[:300]}"
        size = (properties.get("hardwareProfile") or {}).get("vmSize") or None
        known = sizes.get(size) if size else None
        tags = {str(k): str(v) for k, v in (vm.get("tags") or {}).items()}
        spot = " spot" if str(properties.get("priority") or "").lower() == "spot" else ""
        detail = " ".join(x for x in (provisioning, power or "", failure) if x) + spot
        return CloudMachine(id=str(vm.get("id")), name=str(vm.get("name")), status=vm_status(provisioning, power),
                            owner=OwnerTags.from_mapping(tags), processors=known.processors if known else None,
                            created_at=_time(properties.get("timeCreated")), detail=detail,
                            zone=(vm.get("zones") or [None])[0], flavor=size)

    # --- creating ---------------------------------------------------------------------------

    def _id(self, kind: str, name: str) -> str:
        return (f"/subscriptions/{self.options.subscription_id}/resourceGroups/{self.group}/providers/{kind}/"
                f"{name}")

    def _size(self, spec: LaunchSpec) -> Size:
        sizes = self.sizes()
        if spec.flavor is not None:
            size = sizes.get(spec.flavor)
            if size is None:
                raise LaunchRejected(f"size {spec.flavor} is not offered in {self.location}")
            return size
        fitting = sorted((s.processors, s.memory_gb, s.name) for s in sizes.values()
                         if s.processors >= spec.processors and not s.restricted)
        if not fitting:
            raise LaunchRejected(f"no size in {self.location} has {spec.processors} processors; set flavor_names")
        return sizes[fitting[0][2]]

    def _zone(self, size: Size) -> str | None:
        zones = [z for z in self.options.zones if size.offered(z)]
        if not self.options.zones:
            return None
        if not zones:
            raise LaunchRejected(f"size {size.name} is not offered in zones {' '.join(self.options.zones)} of "
                                 f"{self.location}")
        with self._lock:
            zone = min(zones, key=lambda z: (self._zone_counts.get(z, 0), self.options.zones.index(z)))
            self._zone_counts[zone] = self._zone_counts.get(zone, 0) + 1
        return zone

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        user_data = fit_user_data(spec.user_data, MAX_USER_DATA)
        custom_data = base64.b64encode(user_data).decode()
        with self._lock:
            done = self._by_name.get(spec.name)
        if done is not None:
            return self._same(spec, done)
        self._held(f"create {spec.name}")
        self._tidy()
        size = self._size(spec)
        if size.restricted:
            raise LaunchRejected(f"size {size.name} is not offered to this subscription in {self.location}")
        zone = self._zone(size) if spec.zone is None else self._named_zone(size, spec.zone)
        reference = image_reference(spec.image)
        tags = {**spec.owner.as_dict(), **{k: v for k, v in spec.metadata.items() if len(v) <= 256}}
        made = {TAG_MACHINE: spec.name, TAG_CREATED: str(int(self.clock()))}
        nic_id = self._id("Microsoft.Network/networkInterfaces", f"{spec.name}-nic")
        configuration: dict[str, Any] = {"subnet": {"id": self.options.subnet_id},
                                         "privateIPAllocationMethod": "Dynamic"}
        if self.options.public_ip:
            ip: dict[str, Any] = {"location": self.location, "tags": tags | made, "sku": {"name": "Standard"},
                                  "properties": {"publicIPAllocationMethod": "Static", "deleteOption": "Delete"}}
            if zone is not None:
                ip["zones"] = [zone]
            with self._mapped(f"create public IP {spec.name}-ip", creating=True):
                self.network.public_ip_addresses.begin_create_or_update(self.group, f"{spec.name}-ip", ip,
                                                                        polling=False)
            configuration["publicIPAddress"] = {"id": self._id("Microsoft.Network/publicIPAddresses",
                                                               f"{spec.name}-ip")}
        nic = {"location": self.location, "tags": tags | made,
               "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": configuration}]}}
        with self._mapped(f"create NIC {spec.name}-nic", creating=True):
            self.network.network_interfaces.begin_create_or_update(self.group, f"{spec.name}-nic", nic, polling=False)
        body = self._vm_body(spec, size, zone, reference, tags, nic_id, custom_data)
        try:
            from azure.core import MatchConditions
            from azure.core.exceptions import ResourceExistsError

            with self._mapped(f"create VM {spec.name}", creating=True):
                try:
                    self.compute.virtual_machines.begin_create_or_update(
                        self.group, spec.name, body, match_condition=MatchConditions.IfMissing, polling=False)
                except ResourceExistsError as exc:
                    if exc.status_code != 412:
                        raise
                    return self._existing(spec)
        except (QuotaExceeded, LaunchRejected, CloudUnavailable):
            self._undo_nic(spec.name)
            raise
        machine = CloudMachine(id=self._id("Microsoft.Compute/virtualMachines", spec.name), name=spec.name,
                               status=CloudStatus.STARTING, owner=spec.owner, processors=size.processors,
                               zone=zone, flavor=size.name, detail="Creating")
        with self._lock:
            self._by_name[spec.name] = machine
            self._listed.add(spec.name)
        return machine

    def _named_zone(self, size: Size, zone: str) -> str:
        """``zone``, a machinetype's offering: NoCapacity where the size is not offered there (the next
        offering may be)."""
        if not size.offered(zone):
            raise NoCapacity(f"size {size.name} is not offered in zone {zone} of {self.location}")
        with self._lock:
            self._zone_counts[zone] = self._zone_counts.get(zone, 0) + 1
        return zone

    def _vm_body(self, spec: LaunchSpec, size: Size, zone: str | None, reference: dict[str, str],
                 tags: dict[str, str], nic_id: str, custom_data: str) -> dict[str, Any]:
        options = self.options
        disk: dict[str, Any] = {"name": f"{spec.name}-osdisk", "createOption": "FromImage", "deleteOption": "Delete"}
        if options.os_disk_type:
            disk["managedDisk"] = {"storageAccountType": {"standard_lrs": "Standard_LRS", "standardssd_lrs":
                                                          "StandardSSD_LRS", "premium_lrs": "Premium_LRS"}[
                options.os_disk_type]}
        if options.os_disk_gb:
            disk["diskSizeGB"] = options.os_disk_gb
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": size.name},
            "storageProfile": {"imageReference": reference, "osDisk": disk},
            "osProfile": {"computerName": spec.name[:64], "adminUsername": options.admin_username,
                          "customData": custom_data,
                          "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                              {"path": f"/home/{options.admin_username}/.ssh/authorized_keys",
                               "keyData": self.ssh_key}]}}},
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True,
                                                                                    "deleteOption": "Delete"}}]},
        }
        mt = self.machinetypes.get(spec.machinetype) or AzureMachinetype()
        if spec.capacity == SPOT or (spec.capacity is None and mt.spot):
            properties.update(priority="Spot", evictionPolicy="Delete",
                              billingProfile={"maxPrice": -1 if mt.max_price is None else mt.max_price})
        body: dict[str, Any] = {"location": self.location, "tags": tags, "properties": properties}
        if zone is not None:
            body["zones"] = [zone]
        return body

    def _same(self, spec: LaunchSpec, found: CloudMachine) -> CloudMachine:
        if found.owner is not None and found.owner.request_id in (spec.request_id, ""):
            return found  # a retried create: the machine the first one made
        who = found.owner.request_id if found.owner is not None else "someone else"
        raise LaunchRejected(f"a VM named {spec.name} exists for another request ({who}); left alone")

    def _existing(self, spec: LaunchSpec) -> CloudMachine:
        """The VM of this name, made before (If-None-Match refused the create): ours for this request, or not."""
        with self._mapped(f"get VM {spec.name}"):
            vm = self.compute.virtual_machines.get(self.group, spec.name)
        machine = self._machine(vm.as_dict(), None, self.sizes())
        return self._same(spec, dataclasses.replace(machine, status=CloudStatus.STARTING))

    def _undo_nic(self, name: str) -> None:
        """A create refused after its NIC was made: the NIC goes now (its IP, held until the NIC is gone, at the
        next orphan sweep)."""
        try:
            with self._mapped(f"delete NIC {name}-nic"):
                self.network.network_interfaces.begin_delete(self.group, f"{name}-nic", polling=False)
        except CloudUnavailable as exc:
            log.warning("space=%s NIC %s-nic of a refused create not deleted now (the orphan sweep will): %s",
                        self.space, name, exc)

    # --- deleting ---------------------------------------------------------------------------

    def delete_machine(self, machine_id: str) -> None:
        prefix = self._id("Microsoft.Compute/virtualMachines", "")
        if not machine_id.lower().startswith(prefix.lower()) or "/" in machine_id[len(prefix):]:
            log.warning("space=%s delete of %r: not a VM id of this resource group, nothing deleted", self.space,
                        machine_id)
            return
        name = machine_id[len(prefix):]
        self._held(f"delete VM {name}")
        self._tidy()
        from azure.core.exceptions import ResourceNotFoundError

        with self._mapped(f"delete VM {name}"):
            try:
                self.compute.virtual_machines.begin_delete(self.group, name, polling=False)
            except ResourceNotFoundError:
                pass  # already gone
        with self._lock:
            self._by_name.pop(name, None)

    # --- orphans ----------------------------------------------------------------------------

    def _tidy(self) -> None:
        """The orphan sweep, at the first create or delete after a listing, at most every orphan_seconds. A
        failure is logged and tried again next time: it never stops the create or delete."""
        now = self.clock()
        with self._lock:
            if not self._tidy_due or now - self._tidied_at < self.options.orphan_seconds:
                return
            self._tidy_due = False
            self._tidied_at = now
            listed = set(self._listed)
        try:
            self._sweep(listed, now)
        except CloudUnavailable as exc:
            log.warning("space=%s orphan sweep not done, tried again later: %s", self.space, exc)

    def _sweep(self, listed: set[str], now: float) -> None:
        young = now - self.options.orphan_seconds
        with self._mapped("list NICs"):
            nics = list(self.network.network_interfaces.list(self.group))
        with self._mapped("list public IPs"):
            ips = list(self.network.public_ip_addresses.list(self.group))
        with self._mapped("list disks"):
            disks = list(self.compute.disks.list_by_resource_group(self.group))

        gone: set[str] = set()  # NICs deleted now: their IPs are free once Azure is done (at once, or next sweep)
        for nic in nics:
            machine = self._orphaned(nic, listed, young)
            if machine is not None and nic.virtual_machine is None:
                if self._remove("NIC", nic.name, machine, self.network.network_interfaces.begin_delete):
                    gone.add(str(nic.id).lower())
        for ip in ips:
            machine = self._orphaned(ip, listed, young)
            holder = str(ip.ip_configuration.id).lower().split("/ipconfigurations/")[0] if ip.ip_configuration else ""
            if machine is not None and (not holder or holder in gone):
                self._remove("public IP", ip.name, machine, self.network.public_ip_addresses.begin_delete)
        for disk in disks:
            self._disk(disk, listed, young)

    def _orphaned(self, resource: Any, listed: set[str], young: float) -> str | None:
        """The machine a NIC or IP was made for, if it is this space's, old enough, and its VM is not listed."""
        tags = resource.tags or {}
        machine = tags.get(TAG_MACHINE)
        if tags.get(TAG_SPACE) != self.space or not machine or machine in listed:
            return None
        try:
            if float(tags.get(TAG_CREATED, "0")) > young:
                return None  # young: its create may still be going on
        except ValueError:
            pass
        return str(machine)

    def _disk(self, disk: Any, listed: set[str], young: float) -> None:
        """An OS disk of ours: tagged once its VM is listed, deleted when it has no VM and is old enough."""
        machine = str(disk.name).removesuffix("-osdisk")
        if machine == disk.name or not NAME.fullmatch(machine):
            return
        tags = disk.tags or {}
        if disk.managed_by:
            if machine in listed and tags.get(TAG_SPACE) is None:
                self._tag_disk(disk.name, machine)
            return
        created = disk.time_created
        if machine in listed or (created is not None and created.timestamp() > young):
            return
        if tags.get(TAG_SPACE) in (None, self.space):
            self._remove("disk", disk.name, machine, self.compute.disks.begin_delete)

    def _remove(self, kind: str, name: str, machine: str, delete: Any) -> bool:
        try:
            with self._mapped(f"delete orphan {kind} {name}"):
                delete(self.group, name, polling=False)
        except CloudUnavailable as exc:
            log.warning("space=%s orphan %s %s (of machine %s) not deleted now: %s", self.space, kind, name, machine,
                        exc)
            return False
        log.warning("space=%s deleted orphan %s %s: machine %s has no VM (a create that failed half-way, or a VM "
                    "deleted elsewhere)", self.space, kind, name, machine)
        return True

    def _tag_disk(self, disk: str, machine: str) -> None:
        with self._lock:
            found = self._by_name.get(machine)
        if found is None or found.owner is None:
            return
        try:
            with self._mapped(f"tag disk {disk}"):
                self.compute.disks.begin_update(self.group, disk, {"tags": found.owner.as_dict()}, polling=False)
        except CloudUnavailable as exc:
            log.info("space=%s disk %s not tagged now: %s", self.space, disk, exc)

    # --- quota, notices -----------------------------------------------------------------------

    def capacity(self) -> int | None:
        """The vCPUs this resource group may hold, counting its foreign VMs: the location's quota (regional, and
        the families of the sizes the machinetypes name) less what VMs outside the group hold."""
        with self._lock:
            listed = list(self._by_name.values())
        sizes = self.sizes()
        self._held("list usages")
        with self._mapped("list usages"):
            usages = {str(u.name.value): (int(u.current_value), int(u.limit))
                      for u in self.compute.usage.list(self.location)}
        spot_only = bool(self.machinetypes) and all(mt.spot for mt in self.machinetypes.values())
        holding = [m for m in listed if m.status not in (CloudStatus.STOPPED, CloudStatus.DELETED,
                                                          CloudStatus.FAILED)]
        rooms = []
        families = sorted({sizes[name].family for name in self.wanted_sizes if name in sizes})
        quotas = ["lowPriorityCores"] if spot_only else ["cores", *families]
        for quota in quotas:
            if quota not in usages:
                continue
            current, limit = usages[quota]
            inside = sum(m.processors or 0 for m in holding
                         if quota in ("cores", "lowPriorityCores") or (m.flavor in sizes
                                                                       and sizes[m.flavor].family == quota))
            rooms.append(limit - max(0, current - inside))
        return min(rooms) if rooms else None

    def notices(self, now: datetime) -> list[str]:
        expires = self.options.client_secret_expires
        days = self.options.credential_warning_days
        if expires is None or days == 0 or not (self.options.client_secret_file and self.options.client_id):
            return []
        at = datetime(expires.year, expires.month, expires.day, tzinfo=UTC)
        if at - now > timedelta(days=days):
            return []
        if at <= now:
            text = f"the Azure client secret of this space expired on {expires:%Y-%m-%d}"
        else:
            text = f"the Azure client secret of this space expires on {expires:%Y-%m-%d}, in {(at - now).days} days"
        if self._expiry_logged != now.date():
            self._expiry_logged = now.date()
            log.warning("space=%s %s: make a new secret and update client_secret_file", self.space, text)
        return [text]


# --- making the SDK's clients ---------------------------------------------------------------


def endpoints(options: AzureSpace) -> tuple[str, str]:
    """The Resource Manager and Entra ID endpoints of a space."""
    arm, login = CLOUDS[options.cloud]
    return (options.base_url or arm).rstrip("/"), (options.authority or login).rstrip("/")


def make_credential(options: AzureSpace, timeout: float) -> Any:
    """The azure-identity credential the space's keys name (never logged)."""
    from azure import identity

    _, authority = endpoints(options)
    common: dict[str, Any] = {"authority": authority, "connection_timeout": timeout, "read_timeout": timeout}
    if options.ca_file:
        common["connection_verify"] = options.ca_file
    if options.authority:
        common["disable_instance_discovery"] = True
    if options.client_id and (options.client_secret_file or options.client_certificate_file):
        assert options.tenant_id is not None  # _check
        if options.client_certificate_file:
            return identity.CertificateCredential(options.tenant_id, options.client_id,
                                                  certificate_path=options.client_certificate_file, **common)
        secret = _read(options.client_secret_file, "client_secret_file")
        return identity.ClientSecretCredential(options.tenant_id, options.client_id, secret, **common)
    if options.managed_identity:
        return identity.ManagedIdentityCredential(client_id=options.managed_identity_client_id)
    return identity.DefaultAzureCredential(authority=authority, exclude_interactive_browser_credential=True)


def _read(path: str | None, name: str) -> str:
    try:
        value = Path(str(path)).read_text().strip()
    except OSError as exc:
        raise CloudUnavailable(f"{name} {path}: {exc.strerror}") from None
    if not value:
        raise CloudUnavailable(f"{name} {path} is empty")
    return value


def _retry_policy(timeout: float) -> Any:
    """azure-core's retries of connection errors, 408 and 5xx, with short waits; never of a 429, and never
    sleeping a Retry-After longer than MAX_WAIT (the SDK would sleep any, up to ten times)."""
    from azure.core.pipeline.policies import RetryPolicy

    class NoLongWaits(RetryPolicy[Any, Any]):
        def is_retry(self, settings: Any, response: Any) -> bool:
            if response.http_response.status_code == 429:
                return False
            wait = self.get_retry_after(response)
            if wait is not None and wait > MAX_WAIT:
                return False
            return bool(super().is_retry(settings, response))

    return NoLongWaits(retry_total=3, retry_backoff_factor=0.5, retry_backoff_max=MAX_WAIT,
                       timeout=max(timeout, 1.0))


@dataclass(frozen=True, slots=True)
class Clients:
    compute: Any
    network: Any
    credential: Any = field(repr=False)


def make_clients(options: AzureSpace, timeout: float, credential: Any = None) -> Clients:
    """The compute and network clients of a space (``credential`` given: that one, as tests give theirs)."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient

    if logging.getLogger("azure").level == logging.NOTSET:
        logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    arm, _ = endpoints(options)
    credential = credential if credential is not None else make_credential(options, timeout)
    common: dict[str, Any] = {"base_url": arm, "credential_scopes": [f"{arm}/.default"],
                              "connection_timeout": timeout, "read_timeout": timeout,
                              "user_agent": f"vcycle/{__version__}"}
    if options.ca_file:
        common["connection_verify"] = options.ca_file
    return Clients(ComputeManagementClient(credential, options.subscription_id, retry_policy=_retry_policy(timeout),
                                           **common),
                   NetworkManagementClient(credential, options.subscription_id, retry_policy=_retry_policy(timeout),
                                           **common), credential)


def _check(options: AzureSpace) -> list[tuple[str, str]]:
    problems = []
    if options.client_secret_file and options.client_certificate_file:
        problems.append(("client_certificate_file", "give client_secret_file or client_certificate_file, not both"))
    if (options.client_secret_file or options.client_certificate_file) and not options.client_id:
        problems.append(("client_id", "is required with client_secret_file or client_certificate_file"))
    if options.client_id and not (options.client_secret_file or options.client_certificate_file
                                  or options.managed_identity):
        problems.append(("client_id", "needs client_secret_file or client_certificate_file (a service principal), "
                                      "or managed_identity = true (use managed_identity_client_id)"))
    if options.client_id and not options.tenant_id and not options.managed_identity:
        problems.append(("tenant_id", "is required for a service principal"))
    if options.managed_identity and (options.client_secret_file or options.client_certificate_file):
        problems.append(("managed_identity", "give a managed identity or a service principal, not both"))
    if options.managed_identity_client_id and not options.managed_identity:
        problems.append(("managed_identity_client_id", "needs managed_identity = true"))
    if options.client_secret_expires and not options.client_secret_file:
        problems.append(("client_secret_expires", "is for a client_secret_file"))
    return problems


def _check_machinetype(mt: MachinetypeConfig) -> list[tuple[str, str]]:
    problems = []
    if not mt.root_image:
        problems.append(("root_image", "is required for Azure: publisher:offer:sku:version or an image's resource id"))
    else:
        try:
            image_reference(mt.root_image)
        except LaunchRejected as exc:
            problems.append(("root_image", str(exc).removeprefix(f"root_image {mt.root_image!r} ")))
    if not mt.flavor_names:
        problems.append(("flavor_names", f"is required for Azure: VM sizes with {mt.min_processors} processors or "
                                         "more (Standard_D2s_v3, ...)"))
    if mt.capacity_types and options_of(mt.connector, AzureMachinetype).spot:
        problems.append(("spot", "says the capacity type, and so does capacity_types: keep capacity_types (spot, "
                                 "on-demand, in order) and leave spot out"))
    return problems


def _options(mt: MachinetypeConfig) -> AzureMachinetype:
    """A machinetype's Azure keys; one whose capacity_types name spot alone counts as spot (its quota is the
    low-priority vCPUs)."""
    own = options_of(mt.connector, AzureMachinetype)
    return dataclasses.replace(own, spot=mt.capacity_types == (SPOT,)) if mt.capacity_types else own


def make_connector(space: SpaceConfig, settings: Settings) -> AzureConnector:
    """The connector of an ``api = azure`` space."""
    options = options_of(space.connector, AzureSpace)
    problems = _check(options)
    if problems:
        raise CloudUnavailable("; ".join(f"{name} {why}" for name, why in problems))
    ssh_key = _read(options.ssh_public_key_file, "ssh_public_key_file")
    clients = make_clients(options, space.api_timeout_seconds)
    machinetypes = {name: _options(mt) for name, mt in space.machinetypes.items()}
    flavors = tuple(dict.fromkeys(f for mt in space.machinetypes.values() for f in mt.flavor_names or ()))
    return AzureConnector(clients.compute, clients.network, space.name, options, machinetypes=machinetypes,
                          flavors=flavors, ssh_key=ssh_key)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA, space=AzureSpace,
                         machinetype=AzureMachinetype, check=_check, check_machinetype=_check_machinetype,
                         zones=True, capacity_types=(ON_DEMAND, SPOT))
