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
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vcycle.connectors.base import ConnectorPlugin, fit_user_data
from vcycle.core.model import TAG_SPACE, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import REQUIRED, boolean, choice, integer, matching, options_of, text
from vcycle.core.options import key as option
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded

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


DRIVER_ARGUMENTS = ("project", "region", "host", "port", "signature_version", "ex_force_auth_url",
                    "ex_force_auth_version", "ex_tenant_name", "ex_domain_name", "ex_force_service_region")
OPENSTACK_KEYS = frozenset({"ex_force_auth_url", "ex_force_auth_version", "ex_tenant_name", "ex_domain_name",
                            "ex_force_service_region"})
# the driver-specific keys each driver takes (others take region, host and port where they have them)
DRIVER_KEYS = {"ec2": frozenset({"signature_version"}), "openstack": OPENSTACK_KEYS, "gce": frozenset({"project"})}
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

QUOTA = ("QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED", "InstanceLimitExceeded", "InsufficientInstanceCapacity",
         "VcpuLimitExceeded", "Quota exceeded", "quota", "Limit Exceeded")
REJECTED = ("InvalidAMIID", "InvalidParameter", "InvalidInstanceType", "InvalidUserData", "Unsupported",
            "INVALID_ARGUMENT", "badRequest", "invalid", "Invalid", "not found", "NotFound")
GONE = ("InvalidInstanceID.NotFound", "404", "not found", "NotFound", "notFound")


def node_status(state: Any, raw: Any = None) -> CloudStatus:
    """One node's state in vcycle's terms: the cloud's own word where it says more, else libcloud's NodeState."""
    if isinstance(raw, str) and raw.lower() in RAW_STATES:
        return RAW_STATES[raw.lower()]
    return STATES.get(str(getattr(state, "value", state)).lower(), CloudStatus.UNKNOWN)


def _said(exc: Exception) -> str:
    return " ".join(str(getattr(exc, "value", "") or exc).split())[:500]


@contextmanager
def _mapped(what: str, *, creating: bool = False) -> Iterator[None]:
    """libcloud's errors -> vcycle's: quota and capacity codes are QuotaExceeded, a create refused for what it
    asks is LaunchRejected, the rest (credentials, rate limits, no answer) CloudUnavailable."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError, ProviderError

    try:
        yield
    except InvalidCredsError as exc:
        raise CloudUnavailable(f"{what}: the cloud refused the credentials") from exc
    except RateLimitReachedError as exc:
        raise CloudUnavailable(f"{what}: rate limited: {_said(exc)}") from exc
    except (BaseHTTPError, ProviderError, LibcloudError, MalformedResponseError, Exception) as exc:
        if isinstance(exc, (CloudUnavailable, LaunchRejected, QuotaExceeded)):
            raise
        said = _said(exc)
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
        raw = node.extra.get("status") or node.extra.get("vm_state") or node.extra.get("task_state")
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
                self.driver.destroy_node(node)
        except CloudUnavailable as exc:
            if any(code in str(exc) for code in GONE):
                return  # already gone
            raise

    def capacity(self) -> int | None:
        return None


def make_driver(options: LibcloudSpace, timeout: float) -> Any:
    """The libcloud driver a space's keys describe."""
    from libcloud.compute.providers import get_driver

    problems = _check(options)
    if problems:
        raise CloudUnavailable("; ".join(f"{name} {why}" for name, why in problems))
    try:
        cls = get_driver(options.driver)
    except AttributeError:
        raise CloudUnavailable(f"libcloud has no compute driver {options.driver!r}") from None
    secret = options.secret
    if options.secret_file:
        try:
            with open(options.secret_file) as stream:
                secret = options.secret_file if options.driver == "gce" else stream.read().strip()
        except OSError as exc:
            raise CloudUnavailable(f"secret_file {options.secret_file}: {exc.strerror}") from None
    arguments = {name: getattr(options, name) for name in DRIVER_ARGUMENTS if getattr(options, name) is not None}
    if options.host is not None or not options.secure:
        arguments["secure"] = options.secure
    try:
        driver = cls(options.key, secret, **arguments)
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
        problems.append(("driver", "gce is not supported yet: its labels, metadata user-data and zone operations "
                                   "need code of their own"))
    if options.secret and options.secret_file:
        problems.append(("secret_file", "give secret or secret_file, not both"))
    specific = frozenset().union(*DRIVER_KEYS.values())
    allowed = DRIVER_KEYS.get(options.driver, frozenset())
    for name in sorted(specific - allowed):
        if getattr(options, name) is not None:
            takers = ", ".join(sorted(d for d, keys in DRIVER_KEYS.items() if name in keys))
            problems.append((name, f"is for driver {takers}, not {options.driver}"))
    return problems


def make_connector(space: SpaceConfig, settings: Settings) -> LibcloudConnector:
    """The connector of an ``api = libcloud`` space."""
    options = options_of(space.connector, LibcloudSpace)
    return LibcloudConnector(make_driver(options, space.api_timeout_seconds), options.driver, space.name,
                             settings.manager_name, zone=options.zone, user_data_limit=options.max_user_data_bytes)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=LibcloudSpace,
                         check=_check)
