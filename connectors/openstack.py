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
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vcycle.userdata.size import fit_user_data

from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded
from vcycle.model import CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.options import ApiOptions, Option, choice, integer, options, text, words


def _base64(value: str) -> str:
    try:
        base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (encode it with: echo -n 'PASSword' | base64)") from None
    return value.strip()


_CREDENTIAL_PAIRS = (("username", "password_base64"), ("cred_id", "cred_secret"))


def _check(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    if values.get("cloud"):
        return []
    problems: list[tuple[str, str]] = []
    if not values.get("url"):
        problems.append(("url", "is required (the Keystone endpoint) unless cloud = NAME is given"))
    given = [pair for pair in _CREDENTIAL_PAIRS if values.get(pair[0]) or values.get(pair[1])]
    for first, second in given:
        for key, other in ((first, second), (second, first)):
            if not values.get(key):
                problems.append((key, f"is required with {other}"))
    if not given:
        problems.append(("username", "credentials are required: username + password_base64, "
                                     "cred_id + cred_secret, or cloud"))
    elif values.get("username") and not values.get("project_name"):
        problems.append(("project_name", "is required with username + password_base64"))
    return problems


if TYPE_CHECKING:  # pragma: no cover - types only
    from vcycle.config import Settings, SpaceConfig

OPTIONS = ApiOptions(
    space=options(
        Option("url", text),
        Option("cloud", text, help="a cloud of clouds.yaml; replaces url and credentials"),
        Option("project_name", text),
        Option("domain_name", text, "default"),
        Option("region", text),
        Option("zones", words, ()),
        Option("security_groups", words, ()),
        Option("network_uuid", text),
        Option("glance_api", choice("1", "2"), "2"),
        Option("username", text),
        Option("password_base64", _base64, secret=True),
        Option("cred_id", text),
        Option("cred_secret", text, secret=True),
        Option("credential_warning_days", integer(0), 14),
        Option("key_name", text, help="an existing Nova keypair for the machines"),
    ),
    check=_check,
)


# --- the connector ---------------------------------------------------------------------------

# Nova checks the base64 text of user_data against 65535 characters: 49149 bytes before encoding.
MAX_USER_DATA_BYTES = 65535 // 4 * 3
POWER_RUNNING = 1

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


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """openstacksdk's and keystoneauth's errors -> vcycle's."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    try:
        yield
    except sdk.HttpException as exc:
        status = exc.status_code or 0
        text = f"{what}: {status} {exc.details or exc.message}".strip()
        if (status == 403 and "quota" in text.lower()) or status == 413:
            raise QuotaExceeded(text) from exc
        if status in (400, 404, 409):
            raise LaunchRejected(text) from exc
        raise CloudUnavailable(text) from exc
    except (sdk.SDKException, ksa.ClientException, OSError) as exc:
        raise CloudUnavailable(f"{what}: {exc}") from exc


class OpenStackConnector:
    """One project of one OpenStack cloud, through one openstacksdk connection (its token reused)."""

    api = "openstack"
    max_user_data_bytes = MAX_USER_DATA_BYTES

    def __init__(self, connection: Any, space: str, *, zones: tuple[str, ...] = (), network: str | None = None,
                 security_groups: tuple[str, ...] = (), key_name: str | None = None) -> None:
        self.connection = connection
        self.space = space
        self.zones = zones
        self.network = network
        self.security_groups = security_groups
        self.key_name = key_name
        self._lock = threading.Lock()
        self._created: dict[str, CloudMachine] = {}  # name -> machine, for retried creates
        self._flavors: dict[str, tuple[str, int]] | None = None  # name -> (id, vcpus), once per cycle
        self._images: dict[str, str] = {}
        self._zone_counts: dict[str, int] = dict.fromkeys(zones, 0)

    def list_machines(self) -> list[CloudMachine]:
        with _mapped("list servers"):
            servers = list(self.connection.compute.servers(details=True))
        machines = [self._machine(s) for s in servers]
        with self._lock:
            self._flavors = None  # listed again at most once per cycle, when needed
            self._created.clear()
            counts = dict.fromkeys(self.zones, 0)
            for m in machines:
                if m.owner is not None and m.owner.space == self.space and m.zone in counts:
                    counts[m.zone] += 1
            self._zone_counts = counts
        return machines

    def _machine(self, server: Any) -> CloudMachine:
        metadata = dict(server.metadata or {})
        flavor = server.flavor or {}
        created = server.created_at
        return CloudMachine(
            id=server.id, name=server.name, status=cloud_status(server.status, server.task_state, server.power_state),
            owner=OwnerTags.from_mapping(metadata), processors=flavor.get("vcpus"),
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            detail=" ".join(str(x) for x in (server.status, server.task_state) if x),
            zone=server.availability_zone, flavor=flavor.get("original_name") or flavor.get("name"))

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        user_data = fit_user_data(spec.user_data, self.max_user_data_bytes)
        with self._lock:
            done = self._created.get(spec.name)
        if done is not None and done.owner is not None and done.owner.request_id == spec.request_id:
            return done
        flavor_id, vcpus = self._flavor(spec)
        image_id = self._image(spec.image)
        zone = self._zone()
        metadata = {**spec.owner.as_dict(), "name": spec.name, "machinetype": spec.machinetype, **spec.metadata}
        request: dict[str, Any] = {
            "name": spec.name, "flavor_id": flavor_id, "image_id": image_id, "metadata": metadata,
            "user_data": base64.b64encode(user_data).decode(),
            "networks": [{"uuid": self.network}] if self.network else "none",
        }
        if zone is not None:
            request["availability_zone"] = zone
        if self.security_groups:
            request["security_groups"] = [{"name": g} for g in self.security_groups]
        if self.key_name:
            request["key_name"] = self.key_name
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

    def _image(self, image: str | None) -> str:
        if not image:
            raise LaunchRejected("the machinetype has no root_image")
        name = image[len("image:"):] if image.startswith("image:") else image
        with self._lock:
            found = self._images.get(name)
        if found is None:
            with _mapped(f"find image {name}"):
                match = self.connection.image.find_image(name, ignore_missing=True)
            if match is None:
                raise LaunchRejected(f"image {name!r} not found (root_image = image:NAME or an image id)")
            found = match.id
            with self._lock:
                self._images[name] = found
        return found

    def _zone(self) -> str | None:
        if not self.zones:
            return None
        with self._lock:
            zone = min(self.zones, key=lambda z: (self._zone_counts.get(z, 0), self.zones.index(z)))
            self._zone_counts[zone] = self._zone_counts.get(zone, 0) + 1
        return zone

    def delete_machine(self, machine_id: str) -> None:
        with _mapped(f"delete server {machine_id}"):
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


def make_connection(values: Mapping[str, Any]) -> Any:
    """An openstacksdk connection for a space's keys (the old vcycle's, or cloud = NAME of a clouds.yaml)."""
    import openstack

    with _mapped("connect"):
        if values.get("cloud"):
            return openstack.connect(cloud=values["cloud"], region_name=values.get("region"))
        auth: dict[str, Any] = {"auth_url": values["url"]}
        if values.get("cred_id"):
            auth.update(application_credential_id=values["cred_id"],
                        application_credential_secret=values["cred_secret"])
            return openstack.connection.Connection(auth_type="v3applicationcredential", auth=auth,
                                                   region_name=values.get("region"), identity_api_version="3")
        domain = values.get("domain_name") or "default"
        auth.update(username=values["username"],
                    password=base64.b64decode(values["password_base64"]).decode("utf-8"),
                    project_name=values["project_name"], user_domain_name=domain, project_domain_name=domain)
        return openstack.connection.Connection(auth_type="password", auth=auth, region_name=values.get("region"),
                                               identity_api_version="3")


def make_connector(space: SpaceConfig, settings: Settings) -> OpenStackConnector:
    """The connector of an ``api = openstack`` space."""
    values = space.values
    return OpenStackConnector(make_connection(values), space.name, zones=tuple(values.get("zones") or ()),
                              network=values.get("network_uuid"),
                              security_groups=tuple(values.get("security_groups") or ()),
                              key_name=values.get("key_name"))
