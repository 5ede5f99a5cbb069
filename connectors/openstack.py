"""OpenStack (Nova, Glance, Keystone) through openstacksdk: the options model.

The keys are those of the original vcycle's OpenStack plugin, plus ``cloud``
to take credentials from a clouds.yaml. openstacksdk is imported only when a
connector is made, so that validating a configuration never needs it.

Servers are ours by their metadata tags (``vcycle-space`` and the others),
never by name alone; foreign servers are listed (they count against the
space's limit) and never touched. One openstacksdk connection per space
keeps its Keystone token across cycles and renews it on expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vcycle.connectors import images
from vcycle.connectors.base import ConnectorPlugin, fit_user_data, retry_after
from vcycle.core.model import ON_DEMAND, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.core.options import choice, integer, key, options_of, text, words
from vcycle.core.sections import Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded, Throttled, Unauthorized

log = logging.getLogger(__name__)


def _base64(value: str) -> str:
    try:
        base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (encode it with: echo -n 'PASSword' | base64)") from None
    return value.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenStackSpace:
    """The keys of an ``api = openstack`` space (the old vcycle's, and ``cloud``)."""

    url: str | None = key(text, None, "the Keystone endpoint (unless cloud is given)")
    cloud: str | None = key(text, None, "a cloud of clouds.yaml; replaces url and credentials")
    project_name: str | None = key(text, None, "the project (old: tenancy_name)")
    domain_name: str = key(text, "default", "the user's and the project's domain")
    region: str | None = key(text, None, "the region")
    zones: tuple[str, ...] = key(words, (), "availability zones to spread machines over, fewest of ours first")
    security_groups: tuple[str, ...] = key(words, (), "security groups of every machine")
    network_uuid: str | None = key(text, None, "the network of every machine; none = no network")
    glance_api: str = key(choice("1", "2"), "2", "Glance's API version")
    username: str | None = key(text, None, "a user (with password_base64)")
    password_base64: str | None = key(_base64, None, "the user's password, base64-encoded", secret=True)
    cred_id: str | None = key(text, None, "an application credential id (with cred_secret)")
    cred_secret: str | None = key(text, None, "the application credential's secret", secret=True)
    credential_warning_days: int = key(integer(0), 14, "warn this many days before the credential expires; 0 = no")
    key_name: str | None = key(text, None, "an existing Nova keypair for the machines (root_public_key makes one)")
    signing_ca_dir: str = key(text, images.CA_DIR,
                              "CA directory the CernVM image signing certificate must chain to (cernvm_signing_dn)")
    image_url_ca: str | None = key(text, None,
                                   "CA file or hashed directory for https root_image URLs; default the system's")


_CREDENTIAL_PAIRS = (("username", "password_base64"), ("cred_id", "cred_secret"))


def _check(options: OpenStackSpace) -> list[tuple[str, str]]:
    if options.cloud:
        return []
    problems: list[tuple[str, str]] = []
    if not options.url:
        problems.append(("url", "is required (the Keystone endpoint) unless cloud = NAME is given"))
    given = [pair for pair in _CREDENTIAL_PAIRS if getattr(options, pair[0]) or getattr(options, pair[1])]
    for first, second in given:
        for name, other in ((first, second), (second, first)):
            if not getattr(options, name):
                problems.append((name, f"is required with {other}"))
    if not given:
        problems.append(("username", "credentials are required: username + password_base64, "
                                     "cred_id + cred_secret, or cloud"))
    elif options.username and not options.project_name:
        problems.append(("project_name", "is required with username + password_base64"))
    return problems


# --- the connector ---------------------------------------------------------------------------

# Nova checks the base64 text of user_data against 65535 characters: 49149 bytes before encoding.
MAX_USER_DATA_BYTES = 65535 // 4 * 3
POWER_RUNNING = 1
# The scheduler found no host with room for the flavor (NoValidHost): the server is in ERROR with this fault.
NO_VALID_HOST = "No valid host was found"

# Nova status (and power state) -> ours; task_state "deleting" wins over everything.
STATUS_MAP = {
    "BUILD": CloudStatus.STARTING, "REBUILD": CloudStatus.STARTING, "ACTIVE": CloudStatus.RUNNING,
    "REBOOT": CloudStatus.RUNNING, "HARD_REBOOT": CloudStatus.RUNNING, "MIGRATING": CloudStatus.RUNNING,
    "RESIZE": CloudStatus.RUNNING, "VERIFY_RESIZE": CloudStatus.RUNNING, "PASSWORD": CloudStatus.RUNNING,
    "SHUTOFF": CloudStatus.STOPPED, "STOPPED": CloudStatus.STOPPED, "PAUSED": CloudStatus.STOPPED,
    "SUSPENDED": CloudStatus.STOPPED, "SHELVED": CloudStatus.STOPPED, "SHELVED_OFFLOADED": CloudStatus.STOPPED,
    "ERROR": CloudStatus.FAILED, "DELETED": CloudStatus.DELETED, "SOFT_DELETED": CloudStatus.DELETED,
}


def cloud_status(status: str | None, task_state: str | None, power_state: int | None) -> CloudStatus:
    """One server's state in vcycle's terms."""
    if task_state == "deleting":
        return CloudStatus.DELETING
    found = STATUS_MAP.get((status or "").upper(), CloudStatus.UNKNOWN)
    if found is CloudStatus.RUNNING and status == "ACTIVE" and power_state not in (None, POWER_RUNNING):
        return CloudStatus.STOPPED  # ACTIVE but powered off: the guest shut itself down
    return found


LIST_PAGE = 1000  # servers a page of the listing
LIST_MICROVERSION = "2.47"  # the flavor embedded in each server (vcpus, original_name), as _machine reads it


@contextmanager
def _mapped(what: str, *, deleting: bool = False) -> Iterator[None]:
    """openstacksdk's and keystoneauth's errors -> vcycle's. A 409 on a delete is Nova saying not now (the
    server is locked, or busy with a task): the delete is retried, never taken for a rejected launch."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    try:
        yield
    except sdk.HttpException as exc:
        status = exc.status_code or 0
        text = f"{what}: {status} {exc.details or exc.message}".strip()
        if status == 429:
            headers = getattr(exc.response, "headers", None) or {}
            raise Throttled(text, retry_after(headers.get("Retry-After"))) from exc
        if (status == 403 and "quota" in text.lower()) or status == 413:
            raise QuotaExceeded(text) from exc
        if status in (401, 403):
            raise Unauthorized(f"{text} (check the space's credentials and the project's roles)") from exc
        if status in (400, 404, 409) and not deleting:
            raise LaunchRejected(text) from exc
        raise CloudUnavailable(text) from exc
    except ksa.Unauthorized as exc:  # Keystone refused the credentials (an expired password, a revoked one)
        raise Unauthorized(f"{what}: {exc} (check the space's credentials)") from exc
    except (sdk.SDKException, ksa.ClientException, OSError) as exc:
        raise CloudUnavailable(f"{what}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class MachinetypeOptions:
    """What the connector needs of one machinetype beyond the LaunchSpec."""

    cernvm_signing_dn: str | None = None
    root_public_key: str | None = None  # a path to an ssh public key file
    volume_gb_per_processor: int = 0


DEFAULT_PUBLIC_KEY = "/root/.ssh/id_rsa.pub"
EXPIRY_CHECK = timedelta(hours=1)


class OpenStackConnector:
    """One project of one OpenStack cloud, through one openstacksdk connection (its token reused)."""

    api = "openstack"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, connection: Any, space: str, *, zones: tuple[str, ...] = (), network: str | None = None,
                 security_groups: tuple[str, ...] = (), key_name: str | None = None,
                 machinetypes: Mapping[str, MachinetypeOptions] | None = None, image_cache: Path | None = None,
                 signing_ca_dir: str = images.CA_DIR, image_url_ca: str | None = None,
                 credential_warning_days: int = 14) -> None:
        self.connection = connection
        self.space = space
        self.zones = zones
        self.network = network
        self.security_groups = security_groups
        self.key_name = key_name
        self.machinetypes = dict(machinetypes or {})
        self.image_cache = image_cache or Path("/var/lib/vcycle/imagecache")
        self.signing_ca_dir = signing_ca_dir
        self.image_url_ca = image_url_ca
        self.credential_warning_days = credential_warning_days
        self._lock = threading.Lock()
        self._created: dict[str, CloudMachine] = {}  # name -> our live server, from the listing and creates since
        self._flavors: dict[str, tuple[str, int]] | None = None  # name -> (id, vcpus), once per cycle
        self._images: dict[str, str] = {}  # image:NAME or id -> Glance id
        self._uploads: dict[tuple[str, str], str] = {}  # (source, version) -> Glance id
        self._fresh: dict[str, tuple[images.ImageFile, str]] = {}  # source -> (file, Glance id), this cycle
        self._verified: set[tuple[str, str, str]] = set()  # (source, version, cernvm_signing_dn)
        self._source_locks: dict[str, threading.Lock] = {}
        self._keypairs: set[str] = set()  # keypairs seen or made this cycle
        self._zone_counts: dict[str, int] = dict.fromkeys(zones, 0)
        self._expiry: tuple[datetime, datetime | None] | None = None  # (checked at, credential expires at)

    def list_machines(self) -> list[CloudMachine]:
        with _mapped("list servers"):
            machines = [self._listed(body) for body in self._server_bodies()]
        with self._lock:
            self._flavors = None  # listed again at most once per cycle, when needed
            self._fresh.clear()  # files and URLs checked for a new version once a cycle
            self._keypairs.clear()
            counts = dict.fromkeys(self.zones, 0)
            for m in machines:
                if m.owner is not None and m.owner.space == self.space and m.zone in counts:
                    counts[m.zone] += 1
            self._zone_counts = counts
            self._created = {m.name: m for m in machines if m.owner is not None and m.owner.space == self.space
                             and m.status is not CloudStatus.DELETED}
        return machines

    def _server_bodies(self) -> list[Mapping[str, Any]]:
        """Every server of the project as Nova's JSON (GET /servers/detail, LIST_PAGE a page, by marker):
        read as plain dicts, since making openstacksdk resources of them costs ten times what the rest of a
        cycle spends on a machine (benchmarks/parse.py)."""
        from openstack import exceptions as sdk

        found: list[Mapping[str, Any]] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"limit": LIST_PAGE}
            if marker is not None:
                params["marker"] = marker
            answer = self.connection.compute.get("/servers/detail", params=params,
                                                 microversion=LIST_MICROVERSION)
            sdk.raise_from_response(answer)
            body = answer.json()
            page = body.get("servers") or []
            found += page
            if len(page) < LIST_PAGE or not body.get("servers_links"):
                return found
            marker = page[-1]["id"]

    def _listed(self, body: Mapping[str, Any]) -> CloudMachine:
        """A server of the listing, from its JSON: the same as _machine of its resource."""
        flavor = body.get("flavor") or {}
        created = body.get("created")
        status = body.get("status")
        fault = str((body.get("fault") or {}).get("message") or "") if status == "ERROR" else ""
        task_state = body.get("OS-EXT-STS:task_state")
        return CloudMachine(
            id=body["id"], name=body.get("name") or body["id"],
            status=cloud_status(status, task_state, body.get("OS-EXT-STS:power_state")),
            owner=OwnerTags.from_mapping(body.get("metadata") or {}), processors=flavor.get("vcpus"),
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            detail=" ".join(str(x) for x in (status, task_state, fault) if x),
            zone=body.get("OS-EXT-AZ:availability_zone"), flavor=flavor.get("original_name") or flavor.get("name"),
            no_capacity=fault if NO_VALID_HOST in fault else None)

    def _machine(self, server: Any) -> CloudMachine:
        metadata = dict(server.metadata or {})
        flavor = server.flavor or {}
        created = server.created_at
        fault = str((getattr(server, "fault", None) or {}).get("message") or "") if server.status == "ERROR" else ""
        return CloudMachine(
            id=server.id, name=server.name, status=cloud_status(server.status, server.task_state, server.power_state),
            owner=OwnerTags.from_mapping(metadata), processors=flavor.get("vcpus"),
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            detail=" ".join(str(x) for x in (server.status, server.task_state, fault) if x),
            zone=server.availability_zone, flavor=flavor.get("original_name") or flavor.get("name"),
            no_capacity=fault if NO_VALID_HOST in fault else None)

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        user_data = fit_user_data(spec.user_data, self.max_user_data_bytes)
        with self._lock:
            done = self._created.get(spec.name)
        if done is not None and done.owner is not None:
            if done.owner.request_id == spec.request_id:
                return done  # a retried create: the same server
            raise LaunchRejected(f"a server named {spec.name} exists for another request ({done.owner.request_id})")
        options = self.machinetypes.get(spec.machinetype, MachinetypeOptions())
        flavor_id, vcpus = self._flavor(spec)
        image_id = self._image(spec.image, options)
        key_name = self._keypair(options) or self.key_name
        zone = self._zone() if spec.zone is None else spec.zone  # a machinetype's offering names it, or we spread
        metadata = {**spec.owner.as_dict(), "name": spec.name, "machinetype": spec.machinetype, **spec.metadata}
        request: dict[str, Any] = {
            "name": spec.name, "flavor_id": flavor_id, "metadata": metadata,
            "user_data": base64.b64encode(user_data).decode(),
            "networks": [{"uuid": self.network}] if self.network else "none",
        }
        if options.volume_gb_per_processor:  # boot from a new volume, deleted with the server
            request["block_device_mapping"] = [{
                "boot_index": 0, "uuid": image_id, "source_type": "image", "destination_type": "volume",
                "volume_size": options.volume_gb_per_processor * vcpus, "delete_on_termination": True}]
        else:
            request["image_id"] = image_id
        if zone is not None:
            request["availability_zone"] = zone
        if self.security_groups:
            request["security_groups"] = [{"name": g} for g in self.security_groups]
        if key_name:
            request["key_name"] = key_name
        with _mapped(f"create server {spec.name}"):
            server = self.connection.compute.create_server(**request)
        machine = CloudMachine(id=server.id, name=spec.name, status=CloudStatus.STARTING, owner=spec.owner,
                               processors=vcpus, created_at=None, detail="BUILD", zone=zone,
                               flavor=spec.flavor)
        with self._lock:
            self._created[spec.name] = machine
        return machine

    def _flavor(self, spec: LaunchSpec) -> tuple[str, int]:
        flavors = self._flavor_table()
        if spec.flavor is None:
            fitting = sorted((vcpus, name) for name, (_, vcpus) in flavors.items() if vcpus >= spec.processors)
            if not fitting:
                raise LaunchRejected(f"no flavor has {spec.processors} vcpus; set flavor_names")
            return flavors[fitting[0][1]]
        if spec.flavor not in flavors:
            raise LaunchRejected(f"flavor {spec.flavor!r} does not exist in this project")
        return flavors[spec.flavor]

    def _flavor_table(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            table = self._flavors
        if table is None:
            with _mapped("list flavors"):
                table = {f.name: (f.id, f.vcpus) for f in self.connection.compute.flavors()}
            with self._lock:
                self._flavors = table
        return table

    # --- images ----------------------------------------------------------------------------

    def _image(self, image: str | None, options: MachinetypeOptions) -> str:
        if not image:
            raise LaunchRejected("the machinetype has no root_image")
        if images.is_file_or_url(image):
            return self._uploaded(image, options)
        name = image[len("image:"):] if image.startswith("image:") else image
        with self._lock:
            found = self._images.get(name)
        if found is None:
            match = self._find(self.connection.image.find_image, name, f"find image {name}")
            if match is None:
                raise LaunchRejected(f"image {name!r} not found (root_image = image:NAME or an image id)")
            found = match.id
            with self._lock:
                self._images[name] = found
        return found

    def check_images(self, wanted: Mapping[str, str | None]) -> dict[str, str]:
        """machinetype -> what is wrong with its root_image: an image not in Glance, a file that cannot be read
        (nothing is uploaded; a URL is not fetched)."""
        problems = {}
        for machinetype, image in sorted(wanted.items()):
            try:
                if image and images.is_file_or_url(image):
                    if not image.startswith(("http://", "https://")):
                        path = image.removeprefix("file://")
                        if not os.access(path, os.R_OK):
                            why = "does not exist" if not os.path.exists(path) else "cannot be read by this user"
                            problems[machinetype] = f"root_image {path} {why}"
                    continue
                self._image(image, MachinetypeOptions())
            except LaunchRejected as exc:
                problems[machinetype] = str(exc)
        return problems

    def _uploaded(self, source: str, options: MachinetypeOptions) -> str:
        """The Glance image of a file or URL at its current version: found, or uploaded once."""
        with self._lock:
            lock = self._source_locks.setdefault(source, threading.Lock())
        with lock:  # one fetch and one upload per source, however many creates wait on it
            fresh = self._fresh.get(source)
            # checked for a new version once a cycle
            local = fresh[0] if fresh else images.local_image(source, self.image_cache,
                                                               verify=self.image_url_ca or True)
            if options.cernvm_signing_dn:  # each machinetype's rule, once per version, before any upload
                key = (source, local.version, options.cernvm_signing_dn)
                if key not in self._verified:
                    images.check_signed(local, options.cernvm_signing_dn, self.signing_ca_dir, datetime.now(UTC))
                    self._verified.add(key)
            if fresh is None:
                found = self._uploads.get((source, local.version)) or self._glance_image(local)
                self._uploads[(source, local.version)] = found
                fresh = self._fresh[source] = (local, found)
            return fresh[1]

    def _glance_image(self, local: images.ImageFile) -> str:
        name = f"vcycle-{local.version}"
        try:
            with _mapped(f"list images named {name}"):
                for candidate in self.connection.image.images(name=name):
                    if candidate.status == "active":
                        return str(candidate.id)
            log.info("space=%s uploading root image %s (%d bytes, version %s) to Glance as %s", self.space,
                     local.source, local.path.stat().st_size, local.last_modified, name)
            with _mapped(f"upload image {name}"):
                made = self.connection.image.create_image(
                    name, filename=str(local.path), disk_format=local.disk_format, container_format="bare",
                    visibility="private", allow_duplicates=True, wait=True, timeout=3600,
                    vcycle_source=local.source, vcycle_last_modified=str(local.last_modified),
                    architecture="x86_64")
        except (CloudUnavailable, LaunchRejected) as exc:  # nothing was created: back off, do not wait on sync
            raise LaunchRejected(f"root image {local.source} not available in Glance: {exc}") from exc
        log.info("space=%s root image %s is Glance image %s", self.space, local.source, made.id)
        return str(made.id)

    # --- keypairs, zones --------------------------------------------------------------------

    def _keypair(self, options: MachinetypeOptions) -> str | None:
        """The Nova keypair holding the machinetype's root_public_key (made if missing), or None."""
        path = options.root_public_key
        if path is None:
            if not os.path.exists(DEFAULT_PUBLIC_KEY):
                return None
            path = DEFAULT_PUBLIC_KEY
        try:
            line = Path(path).read_text().strip()
            blob = base64.b64decode(line.split()[1], validate=True)
        except OSError as exc:
            raise LaunchRejected(f"root_public_key {path}: {exc.strerror or exc}") from exc
        except (IndexError, ValueError, binascii.Error):
            raise LaunchRejected(f"root_public_key {path}: not an ssh public key line") from None
        name = "vcycle-" + hashlib.md5(blob, usedforsecurity=False).hexdigest()  # the key's old fingerprint
        with self._lock:
            if name in self._keypairs:
                return name
        with _mapped(f"keypair {name}"):
            if self._find(self.connection.compute.find_keypair, name, f"find keypair {name}") is None:
                self.connection.compute.create_keypair(name=name, public_key=line)
                log.info("space=%s keypair %s made from %s", self.space, name, path)
        with self._lock:
            self._keypairs.add(name)
        return name

    @staticmethod
    def _find(finder: Any, name: str, what: str) -> Any:
        """openstacksdk's find_*, None when missing (its ignore_missing is deprecated)."""
        from openstack import exceptions as sdk

        with _mapped(what):
            try:
                return finder(name, ignore_missing=False)
            except sdk.NotFoundException:  # ResourceNotFound too: "no such name" is an answer, not an error
                return None

    def _zone(self) -> str | None:
        if not self.zones:
            return None
        with self._lock:
            zone = min(self.zones, key=lambda z: (self._zone_counts.get(z, 0), self.zones.index(z)))
            self._zone_counts[zone] = self._zone_counts.get(zone, 0) + 1
        return zone

    def delete_machine(self, machine_id: str) -> None:
        with _mapped(f"delete server {machine_id}", deleting=True):
            self.connection.compute.delete_server(machine_id, ignore_missing=True)

    def capacity(self) -> int | None:
        """The project's cores quota (None if unlimited)."""
        with _mapped("get limits"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openstacksdk warns of limits fields Nova no longer sends
            limits = self.connection.compute.get_limits()
        cores = limits.absolute.total_cores
        return None if cores is None or cores < 0 else int(cores)

    def flavors(self) -> Mapping[str, int]:
        return {name: vcpus for name, (_, vcpus) in self._flavor_table().items()}

    # --- credential expiry --------------------------------------------------------------------

    def notices(self, now: datetime) -> list[str]:
        """Warnings for the cycle report: the credential expires within credential_warning_days."""
        if self.credential_warning_days <= 0:
            return []
        if self._expiry is None or now - self._expiry[0] >= EXPIRY_CHECK:
            self._expiry = (now, self._credential_expiry())
        expires = self._expiry[1]
        if expires is None or expires - now > timedelta(days=self.credential_warning_days):
            return []
        what = "application credential" if self._credential_id() else "password"
        if expires <= now:
            text = f"the OpenStack {what} of this space expired at {expires:%Y-%m-%d %H:%M} UTC"
        else:
            left = expires - now
            text = (f"the OpenStack {what} of this space expires at {expires:%Y-%m-%d %H:%M} UTC, in "
                    f"{left.days} days {left.seconds // 3600} hours: renew it")
        if self._expiry[0] == now:  # logged once per check, shown in every report
            log.warning("space=%s %s", self.space, text)
        return [text]

    def _credential_id(self) -> str | None:
        auth = getattr(getattr(self.connection, "config", None), "auth", None) or {}
        return auth.get("application_credential_id")

    def _credential_expiry(self) -> datetime | None:
        """When the space's application credential (or the user's password) expires; None if never or unknown."""
        try:
            with _mapped("read credential expiry"):
                user = self.connection.current_user_id
                cred = self._credential_id()
                if cred:
                    stamp = self.connection.identity.get_application_credential(user, cred).expires_at
                else:
                    stamp = self.connection.identity.get_user(user).password_expires_at
        except (CloudUnavailable, LaunchRejected, QuotaExceeded) as exc:
            log.info("space=%s credential expiry not known: %s", self.space, exc)
            return None
        if not stamp:
            return None
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def make_connection(options: OpenStackSpace, api_timeout: float = 60.0) -> Any:
    """An openstacksdk connection for a space's keys (the old vcycle's, or cloud = NAME of a clouds.yaml); each
    request times out after ``api_timeout``."""
    import openstack

    with _mapped("connect"):
        if options.cloud:
            return openstack.connect(cloud=options.cloud, region_name=options.region, api_timeout=api_timeout)
        auth: dict[str, Any] = {"auth_url": options.url}
        if options.cred_id:
            auth.update(application_credential_id=options.cred_id, application_credential_secret=options.cred_secret)
            return openstack.connection.Connection(auth_type="v3applicationcredential", auth=auth,
                                                   region_name=options.region, identity_api_version="3",
                                                   api_timeout=api_timeout)
        domain = options.domain_name
        auth.update(username=options.username,
                    password=base64.b64decode(options.password_base64 or "").decode("utf-8"),
                    project_name=options.project_name, user_domain_name=domain, project_domain_name=domain)
        return openstack.connection.Connection(auth_type="password", auth=auth, region_name=options.region,
                                               identity_api_version="3", api_timeout=api_timeout)


def make_connector(space: SpaceConfig, settings: Settings) -> OpenStackConnector:
    """The connector of an ``api = openstack`` space."""
    options = options_of(space.connector, OpenStackSpace)
    machinetypes = {name: MachinetypeOptions(cernvm_signing_dn=mt.cernvm_signing_dn,
                                             root_public_key=mt.root_public_key,
                                             volume_gb_per_processor=mt.volume_gb_per_processor)
                    for name, mt in space.machinetypes.items()}
    return OpenStackConnector(make_connection(options, space.api_timeout_seconds), space.name, zones=options.zones,
                              network=options.network_uuid,
                              security_groups=options.security_groups, key_name=options.key_name,
                              machinetypes=machinetypes, image_cache=Path(settings.state_dir) / "imagecache",
                              signing_ca_dir=options.signing_ca_dir, image_url_ca=options.image_url_ca,
                              credential_warning_days=options.credential_warning_days)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA_BYTES, space=OpenStackSpace,
                         check=_check, zones=True, capacity_types=(ON_DEMAND,))
