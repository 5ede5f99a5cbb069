"""``api = libcloud``: any compute driver of apache-libcloud as a space (``pip install vcycle[libcloud]``).

``driver`` names libcloud's provider (``ec2``, ``openstack``, ``gce``,
``cloudstack``, ``exoscale``, ...); the space's keys give the driver its
arguments (``key``, ``secret`` or ``secret_file``, ``project``, ``region``,
``host``, ``port``, ``secure``, and a declared set of the drivers' ``ex_*``
options), only those that are set, so a driver refusing one says which.
Credentials are never logged: errors carry libcloud's message, never the
request.

Ownership: where the driver keeps tags, the owner tags go there (EC2's
tags and OpenStack's server metadata: ``ex_metadata``) and make a machine
ours. On a driver without any, a machine is ours by its name alone (vcycle's
names: ``vcycle-MACHINETYPE-...``), matched against the store's records: a
foreign machine given such a name would be taken for ours, and one of ours
renamed would be missed; the README says so. One listing per cycle
(``list_nodes``, of the space's tag where the driver filters by tags: EC2,
whose foreign machines then count only through the account's own limits, as
with the native connector); sizes (processors) and images looked up at most
once a cycle. Creates are idempotent by name. User-data goes as ``ex_userdata``,
fitted to the cloud's limit before the call.

Google Compute Engine (``driver = gce``) has a class of its own, GCEConnector:
libcloud's GCE driver gives it the service account's OAuth (the JSON key of
``secret_file``; the token cached in ``state_dir``), its connection and its
machine types, and it reads and writes Compute Engine's JSON through that
connection, so that no zone operation is waited for: an insert (with a
``requestId`` derived from vcycle's request, so a retried one makes no second
instance) is started, its operation followed at the next listings (through a
file in ``state_dir``, so that cron's next process follows it too), and one
that fails late (ZONE_RESOURCE_POOL_EXHAUSTED) is a failed machine with GCE's
reason. Labels (label-safe) carry the owner tags for the listing's filter and
for cost reports, metadata items carry them exactly; user-data is the
``user-data`` metadata value (cloud-init) or ``startup-script``, at most
256 KB a value (base64 with ``user-data-encoding`` where it is not text) and
512 KB in all; Spot (``SPOT``, deleted when preempted) and preemptible
machinetypes; zones spread; the region's CPUS quota as capacity.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vcycle.connectors.base import ConnectorPlugin, fit_user_data
from vcycle.core.model import TAG_SPACE, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import REQUIRED, boolean, choice, integer, matching, options_of, text, words
from vcycle.core.options import key as option
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, NoCapacity, QuotaExceeded, Throttled, Unauthorized

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LibcloudSpace:
    """The keys of an ``api = libcloud`` space: the driver and the arguments it is made with."""

    driver: str = option(matching(r"[a-z0-9_]+", "a libcloud provider name (ec2, openstack, gce, ...)"), REQUIRED,
                         "libcloud's provider name: ec2, openstack, gce, cloudstack, ...")
    key: str | None = option(text, None, "the driver's key: a user, an access key id, a service account's e-mail")
    secret: str | None = option(text, None, "its secret (or secret_file)", secret=True)
    secret_file: str | None = option(text, None, "a file holding the secret (a GCE service account's JSON key)")
    project: str | None = option(text, None, "the project (GCE)")
    region: str | None = option(text, None, "the region")
    zone: str | None = option(text, None, "the zone (location) machines are made in; default the driver's")
    host: str | None = option(text, None, "the API's host, where not the cloud's own")
    port: int | None = option(integer(1, 65535), None, "the API's port")
    secure: bool = option(boolean, True, "https to the API (false: http)")
    signature_version: str | None = option(choice("2", "4"), None, "EC2's request signature version")
    ex_force_auth_url: str | None = option(text, None, "OpenStack: the Keystone URL")
    ex_force_auth_version: str | None = option(text, None, "OpenStack: the Keystone API (3.x_password, ...)")
    ex_tenant_name: str | None = option(text, None, "OpenStack: the project")
    ex_domain_name: str | None = option(text, None, "OpenStack: the user's and project's domain")
    ex_force_service_region: str | None = option(text, None, "OpenStack: the region of the compute service")
    max_user_data_bytes: int | None = option(integer(1, 16 * 1024 * 1024), None,
                                             "the cloud's user-data limit, where the driver's table has none")
    zones: tuple[str, ...] = option(words, (), "GCE: zones to spread machines over, fewest of ours first")
    network: str | None = option(text, None, "GCE: the machines' network (default: default)")
    subnetwork: str | None = option(text, None, "GCE: the machines' subnetwork (regions/REGION/subnetworks/NAME)")
    user_data_key: str = option(choice("user-data", "startup-script"), "user-data",
                                "GCE: the metadata key of the user-data: user-data (cloud-init) or startup-script "
                                "(images without cloud-init)")


@dataclass(frozen=True, slots=True, kw_only=True)
class LibcloudMachinetype:
    """The keys an ``api = libcloud`` space adds to its machinetypes."""

    spot: bool = option(boolean, False, "GCE: Spot VMs (provisioningModel SPOT, deleted when preempted)")
    preemptible: bool = option(boolean, False, "GCE: preemptible VMs (the older kind of Spot: at most 24 hours)")


DRIVER_ARGUMENTS = ("project", "region", "host", "port", "signature_version", "ex_force_auth_url",
                    "ex_force_auth_version", "ex_tenant_name", "ex_domain_name", "ex_force_service_region")
OPENSTACK_KEYS = frozenset({"ex_force_auth_url", "ex_force_auth_version", "ex_tenant_name", "ex_domain_name",
                            "ex_force_service_region"})
# the driver-specific keys each driver takes (others take region, host and port where they have them)
DRIVER_KEYS = {"ec2": frozenset({"signature_version"}), "openstack": OPENSTACK_KEYS,
               "gce": frozenset({"project", "zones", "network", "subnetwork"})}
# what each driver takes as user-data, before any encoding (the others: EC2's)
USER_DATA_LIMITS = {"ec2": 16 * 1024, "openstack": 65535 // 4 * 3, "gce": 256 * 1024}
MAX_USER_DATA_BYTES = 16 * 1024
TAGGED = {"ec2": "tags", "openstack": "metadata"}  # drivers that keep tags: where a node's extra has them

# libcloud's NodeState -> ours (anything else: UNKNOWN)
STATES = {"running": CloudStatus.RUNNING, "starting": CloudStatus.STARTING, "pending": CloudStatus.STARTING,
          "rebooting": CloudStatus.RUNNING, "reconfiguring": CloudStatus.RUNNING, "migrating": CloudStatus.RUNNING,
          "updating": CloudStatus.RUNNING, "normal": CloudStatus.RUNNING, "stopping": CloudStatus.STOPPED,
          "stopped": CloudStatus.STOPPED, "suspended": CloudStatus.STOPPED, "paused": CloudStatus.STOPPED,
          "error": CloudStatus.FAILED, "terminated": CloudStatus.DELETED, "unknown": CloudStatus.UNKNOWN}
# the cloud's own words, where libcloud says less than it knows (EC2's shutting-down is libcloud's "unknown")
RAW_STATES = {"shutting-down": CloudStatus.DELETING, "stopping": CloudStatus.STOPPED, "stopped": CloudStatus.STOPPED,
              "deleting": CloudStatus.DELETING}
NAME = re.compile(r"vcycle-([a-z0-9][a-z0-9_.-]*)-[a-z0-9]{10}")

# the offering (size, zone) has no room now; another may: the create falls through, the offering cools
CAPACITY = ("ZONE_RESOURCE_POOL_EXHAUSTED", "resourcePoolExhausted", "InsufficientInstanceCapacity",
            "InsufficientCapacity", "NoValidHost")
QUOTA = ("QUOTA_EXCEEDED", "quotaExceeded", "InstanceLimitExceeded", "VcpuLimitExceeded", "Quota exceeded", "quota",
         "Limit Exceeded")
REJECTED = ("InvalidAMIID", "InvalidParameter", "InvalidInstanceType", "InvalidUserData", "Unsupported",
            "INVALID_ARGUMENT", "badRequest", "invalid", "Invalid", "not found", "NotFound", "notFound")
GONE = ("InvalidInstanceID.NotFound", "404", "not found", "NotFound", "notFound")


def node_status(state: Any, raw: Any = None) -> CloudStatus:
    """One node's state in vcycle's terms: the cloud's own word where it says more, else libcloud's NodeState."""
    if isinstance(raw, str) and raw.lower() in RAW_STATES:
        return RAW_STATES[raw.lower()]
    return STATES.get(str(getattr(state, "value", state)).lower(), CloudStatus.UNKNOWN)


def _said(exc: Exception) -> str:
    value = getattr(exc, "value", "") or exc
    if isinstance(value, dict):  # libcloud's GCE errors: Google's error item (reason, message) as the value
        value = f"{value.get('reason', '')}: {value.get('message', '')}"
    code = getattr(exc, "code", None)  # ... or the reason or code apart from the message
    said = " ".join(str(value).split())[:500]
    return f"{code}: {said}" if isinstance(code, str) and code and code not in said else said


@contextmanager
def _mapped(what: str, *, creating: bool = False) -> Iterator[None]:
    """libcloud's errors -> vcycle's: capacity codes are NoCapacity, quota codes QuotaExceeded, refused
    credentials Unauthorized, a rate limit Throttled (with libcloud's retry_after), a create refused for what
    it asks LaunchRejected, the rest (no answer, 5xx) CloudUnavailable."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError, ProviderError

    try:
        yield
    except InvalidCredsError as exc:
        raise Unauthorized(f"{what}: the cloud refused the credentials") from exc
    except RateLimitReachedError as exc:
        wait = getattr(exc, "retry_after", None)
        raise Throttled(f"{what}: rate limited: {_said(exc)}", float(wait) if wait else None) from exc
    except (BaseHTTPError, ProviderError, LibcloudError, MalformedResponseError, Exception) as exc:
        if isinstance(exc, (CloudUnavailable, LaunchRejected, QuotaExceeded)):
            raise
        said = _said(exc)
        if any(code in said for code in CAPACITY):
            raise NoCapacity(f"{what}: {said}") from exc
        if any(code in said for code in QUOTA):
            raise QuotaExceeded(f"{what}: {said}") from exc
        if creating and any(code in said for code in REJECTED):
            raise LaunchRejected(f"{what}: {said}") from exc
        raise CloudUnavailable(f"{what}: {said}") from exc


class LibcloudConnector:
    """One space through one libcloud driver."""

    api = "libcloud"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, driver: Any, provider: str, space: str, manager: str, *, zone: str | None = None,
                 user_data_limit: int | None = None) -> None:
        self.driver = driver
        self.provider = provider
        self.space = space
        self.manager = manager
        self.zone = zone
        self.max_user_data_bytes = user_data_limit or USER_DATA_LIMITS.get(provider, MAX_USER_DATA_BYTES)
        self._lock = threading.Lock()
        self._nodes: dict[str, Any] = {}  # id -> node, from the listing and creates since
        self._destroyed: set[str] = set()  # ids whose destroy the cloud accepted, until they are no longer listed
        self._by_name: dict[str, CloudMachine] = {}
        self._sizes: dict[str, Any] | None = None
        self._images: dict[str, Any] = {}
        self._location: Any = None

    # --- listing ---------------------------------------------------------------------------

    def _owner(self, node: Any) -> OwnerTags | None:
        where = TAGGED.get(self.provider)
        if where is not None:
            return OwnerTags.from_mapping({str(k): str(v) for k, v in (node.extra.get(where) or {}).items()})
        match = NAME.fullmatch(str(node.name))  # no tags on this driver: ours by name alone
        return OwnerTags(self.space, match.group(1), self.manager, "") if match else None

    def _machine(self, node: Any) -> CloudMachine:
        task = node.extra.get("task_state")  # OpenStack: "deleting" while the status still says ACTIVE
        raw = "deleting" if task == "deleting" else (node.extra.get("status") or node.extra.get("vm_state") or task)
        size = node.extra.get("instance_type") or node.extra.get("flavorId") or node.extra.get("machineType")
        sizes = self._sizes or {}
        found = sizes.get(str(size)) if size is not None else None
        created = getattr(node, "created_at", None)
        return CloudMachine(id=str(node.id), name=str(node.name), status=node_status(node.state, raw),
                            owner=self._owner(node), processors=self._processors(found) if found else None,
                            created_at=created if getattr(created, "tzinfo", None) else None,
                            detail=" ".join(str(x) for x in (getattr(node.state, "value", node.state), raw) if x),
                            zone=str(node.extra.get("availability") or node.extra.get("availability_zone") or "")
                            or None, flavor=str(size) if size else None,
                            ip=(node.private_ips or node.public_ips or [None])[0])

    def list_machines(self) -> list[CloudMachine]:
        filters = {"ex_filters": {f"tag:{TAG_SPACE}": self.space}} if self.provider == "ec2" else {}
        with _mapped("list nodes"):  # the space's machines alone where the driver filters by tag (EC2)
            nodes = list(self.driver.list_nodes(**filters))
        machines = [self._machine(n) for n in nodes]
        with self._lock:
            self._destroyed &= {m.id for m in machines}
            machines = [dataclasses.replace(m, status=CloudStatus.DELETING) if m.id in self._destroyed and m.status
                        is not CloudStatus.DELETED else m for m in machines]  # accepted: listed until it is gone
            self._nodes = {str(n.id): n for n in nodes}
            self._by_name = {m.name: m for m in machines if m.status is not CloudStatus.DELETED}
            self._sizes = None  # looked up again at most once a cycle
            self._images.clear()
        return machines

    # --- sizes, images ---------------------------------------------------------------------

    @staticmethod
    def _processors(size: Any) -> int:
        extra = size.extra or {}
        for value in (getattr(size, "vcpus", None), extra.get("vcpu"), extra.get("cpu"), extra.get("vcpus"),
                      extra.get("guestCpus")):
            if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
                return int(value)
        return 1

    def _size_table(self) -> dict[str, Any]:
        with self._lock:
            table = self._sizes
        if table is None:
            with _mapped("list sizes"):
                sizes = list(self.driver.list_sizes(**({"location": self._place()} if self._place() else {})))
            table = {str(s.name): s for s in sizes} | {str(s.id): s for s in sizes}
            with self._lock:
                self._sizes = table
        return table

    def flavors(self) -> Mapping[str, int]:
        return {name: self._processors(size) for name, size in self._size_table().items()}

    def _image(self, image: str | None) -> Any:
        if not image:
            raise LaunchRejected("the machinetype has no root_image (image:NAME or an image id)")
        name = image.removeprefix("image:")
        with self._lock:
            found = self._images.get(name)
        if found is not None:
            return found
        with _mapped(f"find image {name}", creating=True):
            try:
                found = self.driver.get_image(name)
            except Exception:  # noqa: BLE001 (drivers raise what they like for an unknown id): look by name
                found = next((i for i in self.driver.list_images() if name in (i.name, i.id)), None)
        if found is None:
            raise LaunchRejected(f"image {name!r} not found (root_image = image:NAME or an image id)")
        with self._lock:
            self._images[name] = found
        return found

    def _place(self) -> Any:
        if self.zone is None:
            return None
        if self._location is None:
            with _mapped("list locations"):
                self._location = next((loc for loc in self.driver.list_locations()
                                       if self.zone in (loc.name, loc.id)), None)
            if self._location is None:
                raise CloudUnavailable(f"zone {self.zone!r} is not one of the cloud's locations")
        return self._location

    # --- creating, deleting -------------------------------------------------------------------

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        user_data = fit_user_data(spec.user_data, self.max_user_data_bytes)
        with self._lock:
            done = self._by_name.get(spec.name)
        if done is not None:
            if done.owner is None or done.owner.request_id in (spec.request_id, ""):
                return done  # a retried create: the same machine
            raise LaunchRejected(f"a machine named {spec.name} exists for another request ({done.owner.request_id})")
        sizes = self._size_table()
        size = sizes.get(spec.flavor or "")
        if size is None:
            fitting = sorted((self._processors(s), str(s.name)) for s in sizes.values()
                             if self._processors(s) >= spec.processors)
            if spec.flavor is not None or not fitting:
                raise LaunchRejected(f"size {spec.flavor!r} is not offered" if spec.flavor else
                                     f"no size has {spec.processors} processors; set flavor_names")
            size = sizes[fitting[0][1]]
        # bytes: the drivers base64 them as they are (gzipped user-data included)
        arguments: dict[str, Any] = {"name": spec.name, "size": size, "image": self._image(spec.image),
                                     "ex_userdata": user_data}
        if self.provider in TAGGED:
            arguments["ex_metadata"] = {**spec.owner.as_dict(), **spec.metadata}
        if self._place() is not None:
            arguments["location"] = self._place()
        with _mapped(f"create node {spec.name}", creating=True):
            node = self.driver.create_node(**arguments)
        machine = CloudMachine(id=str(node.id), name=spec.name, status=CloudStatus.STARTING, owner=spec.owner,
                               processors=self._processors(size), flavor=str(size.name), zone=self.zone)
        with self._lock:
            self._nodes[machine.id] = node
            self._by_name[spec.name] = machine
        return machine

    def delete_machine(self, machine_id: str) -> None:
        from libcloud.compute.base import Node
        from libcloud.compute.types import NodeState

        with self._lock:
            node = self._nodes.get(machine_id)
        if node is None:
            node = Node(id=machine_id, name=machine_id, state=NodeState.UNKNOWN, public_ips=[], private_ips=[],
                        driver=self.driver)
        try:
            with _mapped(f"destroy node {machine_id}"):
                accepted = self.driver.destroy_node(node)
        except CloudUnavailable as exc:
            if any(code in str(exc) for code in GONE):
                return  # already gone
            raise
        if accepted is not False:
            with self._lock:
                self._destroyed.add(machine_id)

    def capacity(self) -> int | None:
        return None


# --- Google Compute Engine ------------------------------------------------------------------------------------

# GCE's instance statuses -> ours (anything else: UNKNOWN)
GCE_STATES = {"PROVISIONING": CloudStatus.STARTING, "STAGING": CloudStatus.STARTING, "RUNNING": CloudStatus.RUNNING,
              "REPAIRING": CloudStatus.RUNNING, "STOPPING": CloudStatus.STOPPED, "STOPPED": CloudStatus.STOPPED,
              "SUSPENDING": CloudStatus.STOPPED, "SUSPENDED": CloudStatus.STOPPED, "TERMINATED": CloudStatus.STOPPED}
GCE_VALUE_BYTES = 256 * 1024  # one metadata value
GCE_METADATA_BYTES = 512 * 1024  # all of an instance's metadata
LABEL = re.compile(r"[^a-z0-9_-]")


def label_value(value: str) -> str:
    """A GCE label value for ``value``: lowercase letters, digits, ``-`` and ``_``, at most 63 characters; a
    value changed to fit ends with a digest of the original, so that two values never share one label."""
    import hashlib

    safe = LABEL.sub("-", value.lower())
    if safe == value and len(value) <= 63:
        return value
    return f"{safe[:52]}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


def label_key(tag: str) -> str:
    """A tag's name as a label key that filter expressions read as one name (vcycle_space)."""
    return tag.replace("-", "_")


def gce_user_data(data: bytes, key: str) -> list[dict[str, str]]:
    """The metadata items that carry a machine's user-data: text as it is under ``key``; otherwise (gzip, binary,
    over a value) base64 with cloud-init's ``user-data-encoding``, gzipped by ``fit_user_data`` if that makes it
    fit (a startup-script must be text). LaunchRejected over GCE's 256 KB per value."""
    import base64

    if len(data) <= GCE_VALUE_BYTES:
        try:
            return [{"key": key, "value": data.decode()}]
        except UnicodeDecodeError:
            pass
    if key == "startup-script":
        raise LaunchRejected(f"a startup-script is text of at most {GCE_VALUE_BYTES} bytes: the user-data is "
                             f"{len(data)} bytes{'' if data.isascii() else ', not text'}")
    try:
        fitted = fit_user_data(data, GCE_VALUE_BYTES // 4 * 3)  # whose base64 fills a value at most
    except LaunchRejected as exc:
        raise LaunchRejected(f"{exc}: over the {GCE_VALUE_BYTES} bytes of a GCE metadata value in base64") from None
    return [{"key": key, "value": base64.b64encode(fitted).decode()}, {"key": "user-data-encoding", "value": "base64"}]


class GCEConnector(LibcloudConnector):
    """A GCE project's zones through libcloud's GCE driver: its service-account OAuth, its connection and its
    sizes; instances listed, inserted and deleted by the driver's connection as Compute Engine's JSON, so that
    nothing waits for a zone operation (libcloud's create_node and destroy_node poll it to the end) and a
    listing is one call (list_nodes makes two and more)."""

    max_user_data_bytes = GCE_VALUE_BYTES

    def __init__(self, driver: Any, space: str, manager: str, *, options: LibcloudSpace,
                 machinetypes: Mapping[str, LibcloudMachinetype] | None = None, inserts: Path | None = None) -> None:
        zones = options.zones or ((options.zone,) if options.zone else ())
        super().__init__(driver, "gce", space, manager, zone=zones[0] if zones else None)
        self.max_user_data_bytes = GCE_VALUE_BYTES
        self.options = options
        self.project = options.project
        self.zones = zones
        self.machinetypes = dict(machinetypes or {})
        self._calls = threading.Lock()  # libcloud's connection is not for two threads at once
        self._where: dict[str, tuple[str, str]] = {}  # instance id -> (zone, name)
        # name -> (zone, operation, owner, instance id) of the inserts not listed yet
        self._inserts: dict[str, tuple[str, str, OwnerTags, str]]
        self._zone_counts: dict[str, int] = dict.fromkeys(zones, 0)
        self._deleted: set[str] = set()  # names this process deleted: STOPPING and TERMINATED are their deletes
        self._label = label_value(space)
        self._file = inserts  # the inserts being followed, kept for the next process (cron runs one a cycle)
        self._inserts = self._load()

    def _load(self) -> dict[str, tuple[str, str, OwnerTags, str]]:
        import json

        if self._file is None or not self._file.exists():
            return {}
        try:
            kept = json.loads(self._file.read_text())
            return {name: (zone, operation, OwnerTags(**owner), target)
                    for name, (zone, operation, owner, target) in kept.items()}
        except (OSError, ValueError, TypeError) as exc:
            log.warning("space=%s %s not read, its inserts are not followed: %s", self.space, self._file, exc)
            return {}

    def _save(self) -> None:
        """The inserts being followed, written whole (a new file renamed over the old); under self._lock."""
        import dataclasses as dc
        import json
        import os

        if self._file is None:
            return
        kept = {name: [zone, operation, dc.asdict(owner), target]
                for name, (zone, operation, owner, target) in self._inserts.items()}
        try:
            new = self._file.with_name(self._file.name + ".new")
            new.write_text(json.dumps(kept))
            os.replace(new, self._file)
        except OSError as exc:
            log.warning("space=%s %s not written, a next process will not follow these inserts: %s", self.space,
                        self._file, exc)

    def _request(self, what: str, path: str, *, method: str = "GET", params: dict[str, Any] | None = None,
                 data: Any = None, creating: bool = False) -> Any:
        with _mapped(what, creating=creating), self._calls:
            return self.driver.connection.request(path, method=method, params=params, data=data).object

    # --- listing ---------------------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        query = {"maxResults": 500, "filter": f'labels.{label_key(TAG_SPACE)} = "{self._label}"'}
        instances: list[dict[str, Any]] = []
        while True:  # one aggregated list of the space's label, its pages followed
            page = self._request("list instances", "/aggregated/instances", params=query)
            for scope in (page.get("items") or {}).values():
                instances += scope.get("instances") or []
            if not page.get("nextPageToken"):
                break
            query = {**query, "pageToken": page["nextPageToken"]}
        with self._lock:
            self._sizes = None  # machine types looked up again once a cycle, here: creates use these
        sizes = self._gce_sizes()
        machines = [self._gce_machine(i, sizes) for i in instances]
        listed = {m.name for m in machines}
        with self._lock:
            self._deleted &= listed
            deleted = set(self._deleted)
        machines = [dataclasses.replace(m, status=CloudStatus.DELETING) if m.name in deleted and m.status in (
            CloudStatus.STOPPED, CloudStatus.UNKNOWN) else m for m in machines]
        failed = self._failed_inserts({m.name for m in machines if m.status is CloudStatus.RUNNING})
        machines = [m for m in machines if m.name not in failed] + list(failed.values())
        with self._lock:
            self._where = {m.id: (m.zone or "", m.name) for m in machines if m.zone}
            self._by_name = {m.name: m for m in machines if m.status is not CloudStatus.DELETED}
            counts = dict.fromkeys(self.zones, 0)
            for m in machines:
                if m.zone in counts:
                    counts[m.zone] += 1
            self._zone_counts = counts
        return machines

    def _place(self) -> Any:
        return self.driver.zone  # the driver's first zone, which it looked up when it was made

    def _gce_sizes(self) -> dict[str, int]:
        try:
            return dict(self.flavors())
        except CloudUnavailable as exc:
            log.warning("space=%s machine types not listed, processors unknown this cycle: %s", self.space, exc)
            return {}

    def _gce_machine(self, instance: Mapping[str, Any], sizes: Mapping[str, int]) -> CloudMachine:
        metadata = {str(i.get("key")): str(i.get("value", "")) for i in (instance.get("metadata") or {}).get(
            "items") or ()}
        size = str(instance.get("machineType", "")).rsplit("/", 1)[-1] or None
        status = str(instance.get("status") or "")
        scheduling = instance.get("scheduling") or {}
        spot = " spot" if scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") else ""
        created = instance.get("creationTimestamp")
        try:
            when = datetime.fromisoformat(str(created)) if created else None
        except ValueError:
            when = None
        return CloudMachine(id=str(instance.get("id")), name=str(instance.get("name")),
                            status=GCE_STATES.get(status, CloudStatus.UNKNOWN), owner=OwnerTags.from_mapping(metadata),
                            processors=sizes.get(size or ""), created_at=when,
                            detail=" ".join(x for x in (status, instance.get("statusMessage") or "") if x) + spot,
                            zone=str(instance.get("zone", "")).rsplit("/", 1)[-1] or None, flavor=size,
                            ip=next((n.get("networkIP") for n in instance.get("networkInterfaces") or ()), None))

    def _failed_inserts(self, running: set[str]) -> dict[str, CloudMachine]:
        """The inserts of this process whose instance is not running yet, their zone operations followed: one that
        ended in an error is a failed machine with GCE's reason (its instance goes, if it was there); one still
        going is followed at the next listing; one that ended well is done."""
        with self._lock:
            pending = {n: v for n, v in self._inserts.items() if n not in running}
            if len(pending) != len(self._inserts):
                self._inserts = dict(pending)
                self._save()
        failed = {}
        for name, (zone, operation, owner, target) in pending.items():
            try:
                answer = self._request(f"get operation {operation}", f"/zones/{zone}/operations/{operation}")
            except (CloudUnavailable, QuotaExceeded, LaunchRejected) as exc:  # libcloud raises an operation's error
                if "not found" in str(exc).lower():
                    continue  # not known (any more): the listing tells
                failed[name] = CloudMachine(id=target, name=name, status=CloudStatus.FAILED, owner=owner, zone=zone,
                                            detail=f"insert failed: {exc}")
                answer = {"status": "DONE"}
            if answer.get("status") == "DONE":
                with self._lock:
                    self._inserts.pop(name, None)
                    self._save()
        return failed

    # --- creating, deleting -------------------------------------------------------------------

    def _gce_zone(self) -> str:
        with self._lock:
            zone = min(self.zones, key=lambda z: (self._zone_counts.get(z, 0), self.zones.index(z)))
            self._zone_counts[zone] = self._zone_counts.get(zone, 0) + 1
        return zone

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        import uuid

        items = [{"key": k, "value": v} for k, v in {**spec.owner.as_dict(), **spec.metadata}.items()]
        items += gce_user_data(spec.user_data, self.options.user_data_key)
        total = sum(len(i["key"]) + len(i["value"].encode()) for i in items)
        if total > GCE_METADATA_BYTES:
            raise LaunchRejected(f"the instance's metadata would be {total} bytes, over GCE's {GCE_METADATA_BYTES}")
        with self._lock:
            done = self._by_name.get(spec.name)
        if done is not None:
            if done.owner is None or done.owner.request_id in (spec.request_id, ""):
                return done
            raise LaunchRejected(f"an instance named {spec.name} exists for another request ({done.owner.request_id})")
        sizes = self._size_table()
        if spec.flavor is None or spec.flavor not in sizes:
            raise LaunchRejected(f"machine type {spec.flavor!r} is not offered in {self.zones[0]}; set flavor_names")
        zone = self._gce_zone()
        body = self._gce_body(spec, zone, items)
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vcycle:{spec.space}:{spec.request_id}"))
        try:
            operation = self._request(f"insert instance {spec.name}", f"/zones/{zone}/instances", method="POST",
                                      params={"requestId": request_id}, data=body, creating=True)
        except CloudUnavailable as exc:
            if "alreadyExists" not in str(exc):
                raise
            return self._existing(spec, zone)
        target = str(operation.get("targetId") or f"insert-{operation.get('name')}")  # the instance's id to be
        machine = CloudMachine(id=target, name=spec.name, status=CloudStatus.STARTING,
                               owner=spec.owner, processors=self._processors(sizes[spec.flavor]), zone=zone,
                               flavor=spec.flavor, detail="insert started")
        with self._lock:
            self._by_name[spec.name] = machine
            self._inserts[spec.name] = (zone, str(operation.get("name")), spec.owner, machine.id)
            self._save()
            self._where[machine.id] = (zone, spec.name)
        return machine

    def _existing(self, spec: LaunchSpec, zone: str) -> CloudMachine:
        """The instance of this name, made before: this request's (a retried insert), or another's (refused)."""
        found = self._gce_machine(self._request(f"get instance {spec.name}", f"/zones/{zone}/instances/{spec.name}"),
                                  {})
        if found.owner is not None and found.owner.request_id == spec.request_id:
            with self._lock:
                self._by_name[spec.name] = found
                self._where[found.id] = (zone, spec.name)
            return found
        who = found.owner.request_id if found.owner is not None else "someone else"
        raise LaunchRejected(f"an instance named {spec.name} exists for another request ({who}); left alone")

    def _gce_body(self, spec: LaunchSpec, zone: str, items: list[dict[str, str]]) -> dict[str, Any]:
        image = (spec.image or "").removeprefix("image:")
        if not image:
            raise LaunchRejected("the machinetype has no root_image (image:projects/P/global/images/NAME or a family)")
        if not image.startswith(("projects/", "https://", "global/")):
            image = f"projects/{self.project}/global/images/{image}"
        interface: dict[str, Any] = {"network": self.options.network or "global/networks/default"}
        if self.options.subnetwork:
            interface["subnetwork"] = self.options.subnetwork
        labels = {label_key(k): label_value(v) for k, v in spec.owner.as_dict().items()}
        body: dict[str, Any] = {
            "name": spec.name, "machineType": f"zones/{zone}/machineTypes/{spec.flavor}", "labels": labels,
            "metadata": {"items": items}, "networkInterfaces": [interface],
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": image}}],
        }
        mt = self.machinetypes.get(spec.machinetype) or LibcloudMachinetype()
        if mt.spot:
            body["scheduling"] = {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE",
                                  "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
        elif mt.preemptible:
            body["scheduling"] = {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
        return body

    def delete_machine(self, machine_id: str) -> None:
        with self._lock:
            where = self._where.get(machine_id)
        if where is None:
            log.info("space=%s delete of %s: not an instance of this space's listing, nothing deleted", self.space,
                     machine_id)
            return
        zone, name = where
        try:
            self._request(f"delete instance {name}", f"/zones/{zone}/instances/{name}", method="DELETE")
        except CloudUnavailable as exc:
            if "notFound" not in str(exc) and "was not found" not in str(exc):
                raise
        with self._lock:
            self._by_name.pop(name, None)
            if self._inserts.pop(name, None) is not None:
                self._save()
            self._deleted.add(name)

    # --- quota ------------------------------------------------------------------------------

    def capacity(self) -> int | None:
        """The region's CPUS quota (PREEMPTIBLE_CPUS for a space of spot machinetypes only), less what instances
        not of this space hold."""
        zone = self.zones[0] if self.zones else None
        if zone is None:
            return None
        region = zone.rsplit("-", 1)[0]
        answer = self._request(f"get region {region}", f"/regions/{region}")
        spot_only = bool(self.machinetypes) and all(m.spot or m.preemptible for m in self.machinetypes.values())
        metric = "PREEMPTIBLE_CPUS" if spot_only else "CPUS"
        quota = next((q for q in answer.get("quotas") or () if q.get("metric") == metric), None)
        if quota is None:
            return None
        with self._lock:
            ours = sum(m.processors or 0 for m in self._by_name.values()
                       if m.status in (CloudStatus.STARTING, CloudStatus.RUNNING, CloudStatus.UNKNOWN))
        return int(quota["limit"]) - max(0, int(quota["usage"]) - ours)



def make_driver(options: LibcloudSpace, timeout: float, credential_file: str | None = None) -> Any:
    """The libcloud driver a space's keys describe."""
    from libcloud.compute.providers import get_driver

    problems = _check(options)
    if problems:
        raise CloudUnavailable("; ".join(f"{name} {why}" for name, why in problems))
    try:
        cls = get_driver(options.driver)
    except AttributeError:
        raise CloudUnavailable(f"libcloud has no compute driver {options.driver!r}") from None
    if options.driver == "gce" and options.host is not None:
        cls = _gce_elsewhere(cls, options.host, options.port, options.secure)
    key, secret, arguments = _arguments(options, credential_file)
    try:
        driver = cls(key, secret, **arguments)
    except TypeError as exc:
        raise CloudUnavailable(f"driver {options.driver} does not take these keys: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (a driver's own checks of its arguments)
        raise CloudUnavailable(f"driver {options.driver}: {_said(exc)}") from None
    connection = getattr(driver, "connection", None)
    if connection is not None:
        connection.timeout = timeout
    return driver


def _check(options: LibcloudSpace) -> list[tuple[str, str]]:
    problems = []
    if options.driver == "gce":
        if not options.project:
            problems.append(("project", "is required for gce"))
        if not options.secret_file:
            problems.append(("secret_file", "is required for gce: the service account's JSON key file"))
        if not (options.zones or options.zone):
            problems.append(("zones", "is required for gce (or zone): the zones machines are made in"))
    if options.secret and options.secret_file:
        problems.append(("secret_file", "give secret or secret_file, not both"))
    specific = frozenset().union(*DRIVER_KEYS.values())
    allowed = DRIVER_KEYS.get(options.driver, frozenset())
    for name in sorted(specific - allowed):
        if getattr(options, name) not in (None, ()):
            takers = ", ".join(sorted(d for d, keys in DRIVER_KEYS.items() if name in keys))
            problems.append((name, f"is for driver {takers}, not {options.driver}"))
    return problems


def _arguments(options: LibcloudSpace, credential_file: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """The key, the secret and the keyword arguments of a space's driver."""
    secret, key = options.secret, options.key
    if options.secret_file:
        try:
            with open(options.secret_file) as stream:
                read = stream.read()
        except OSError as exc:
            raise CloudUnavailable(f"secret_file {options.secret_file}: {exc.strerror}") from None
        secret = options.secret_file if options.driver == "gce" else read.strip()
        if options.driver == "gce" and key is None:
            key = _client_email(read, options.secret_file)
    if options.driver == "gce":  # a service account; its token cached beside vcycle's state, not in a home
        arguments: dict[str, Any] = {"project": options.project, "auth_type": "SA",
                                     "datacenter": (options.zones or (options.zone,))[0]}
        if credential_file is not None:
            arguments["credential_file"] = credential_file
        return key, secret, arguments
    arguments = {name: getattr(options, name) for name in DRIVER_ARGUMENTS if getattr(options, name) is not None}
    if options.host is not None or not options.secure:
        arguments["secure"] = options.secure
    return key, secret, arguments


def _gce_elsewhere(cls: Any, host: str, port: int | None, secure: bool) -> Any:
    """libcloud's GCE driver with its API and OAuth connections at ``host`` (its constructor passes host and port
    to its connection where that connection takes other arguments)."""
    base = cls.connectionCls

    class Elsewhere(base):  # type: ignore[misc, valid-type]
        def __init__(self, user_id: Any, key: Any, _secure: Any = True, *args: Any, **kwargs: Any) -> None:
            kwargs.update(host=host, port=port or (443 if secure else 80))
            super().__init__(user_id, key, secure, *args, **kwargs)

    return type(cls.__name__, (cls,), {"connectionCls": Elsewhere})


def _client_email(text: str, path: str) -> str:
    import json

    try:
        return str(json.loads(text)["client_email"])
    except (ValueError, KeyError, TypeError):
        raise CloudUnavailable(f"secret_file {path} is not a service account's JSON key (no client_email)") from None


def make_connector(space: SpaceConfig, settings: Settings) -> LibcloudConnector:
    """The connector of an ``api = libcloud`` space."""
    options = options_of(space.connector, LibcloudSpace)
    if options.driver == "gce":
        token = str(Path(settings.state_dir) / f"gce-token-{options.project}.json")
        machinetypes = {name: options_of(mt.connector, LibcloudMachinetype) for name, mt in space.machinetypes.items()}
        inserts = Path(settings.state_dir) / f"gce-inserts-{label_value(space.name)}.json"
        return GCEConnector(make_driver(options, space.api_timeout_seconds, token), space.name,
                            settings.manager_name, options=options, machinetypes=machinetypes, inserts=inserts)
    return LibcloudConnector(make_driver(options, space.api_timeout_seconds), options.driver, space.name,
                             settings.manager_name, zone=options.zone, user_data_limit=options.max_user_data_bytes)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=LibcloudSpace,
                         machinetype=LibcloudMachinetype, check=_check)
