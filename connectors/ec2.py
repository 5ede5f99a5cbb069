"""EC2 and EC2-compatible clouds through boto3.

One space is one region of one account (or one EC2-compatible endpoint).
Machines are instances tagged at launch with vcycle's ownership tags; the
listing is one paginated DescribeInstances filtered by the space's tag
(terminated instances, listed by EC2 for a while, map to DELETED, which sync
reads as gone; filtering them out server-side made moto four times slower). The
request id is the ClientToken, so EC2 itself never makes two instances for
one request when botocore retries. An instance is launched with
InstanceInitiatedShutdownBehavior=terminate, so a machine that powers itself
off (the shipped templates' hard end) is gone with no manager alive. Throttling and 5xx are retried by
botocore's standard retry mode; what still fails becomes CloudUnavailable.

The old vcycle's keys (url, access_key, secret_key, region) still work;
boto3's own credential chain (profile, environment, instance role) is
preferred. boto3 is imported only when a connector is made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vcycle.connectors.base import ConnectorPlugin, fit_user_data, retry_after
from vcycle.core.model import (
    ON_DEMAND,
    SPOT,
    TAG_SPACE,
    CloudMachine,
    CloudStatus,
    LaunchSpec,
    Offering,
    OwnerTags,
)
from vcycle.core.options import boolean, integer, key, number, options_of, text, words
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.errors import CloudUnavailable, LaunchRejected, NoCapacity, QuotaExceeded, Throttled, Unauthorized


@dataclass(frozen=True, slots=True, kw_only=True)
class EC2Space:
    """The keys of an ``api = ec2`` space."""

    url: str | None = key(text, None, "endpoint; omitted = AWS's regional endpoint")
    region: str = key(text, "us-east-1", "the region")
    access_key: str | None = key(text, None, "access key id; omitted = boto3's credential chain", secret=True)
    secret_key: str | None = key(text, None, "its secret", secret=True)
    profile: str | None = key(text, None, "a profile of the AWS config files")
    subnet_ids: tuple[str, ...] = key(words, (), "subnets to spread machines over, fewest of ours first")
    security_group_ids: tuple[str, ...] = key(words, (), "security groups of every machine")
    key_name: str | None = key(text, None, "an EC2 key pair for the machines")
    iam_instance_profile: str | None = key(text, None, "an instance profile name or ARN for the machines")
    api_attempts: int = key(integer(1, 20), 5, "tries of one API call, retries included (all within the space's "
                            "api_timeout_seconds)")


@dataclass(frozen=True, slots=True, kw_only=True)
class EC2Machinetype:
    """The keys an ``api = ec2`` space adds to its machinetypes."""

    spot: bool = key(boolean, False, "spot instances (one-time, terminated on interruption); or name capacity_types")
    spot_max_price: float | None = key(number(0.0), None, "the highest spot price per hour; default on-demand's")


@dataclass(frozen=True, slots=True)
class MachinetypeOptions:
    """What the connector needs of one machinetype beyond the LaunchSpec."""

    cloud: EC2Machinetype = field(default_factory=EC2Machinetype)
    volume_gb_per_processor: int = 0
    flavor_names: tuple[str, ...] = ()


def _check_machinetype(mt: MachinetypeConfig) -> list[tuple[str, str]]:
    problems = []
    if not mt.root_image:
        problems.append(("root_image", "is required for EC2: image:ami-... or image:NAME"))
    if not mt.flavor_names:
        problems.append(("flavor_names", f"is required for EC2: instance types with {mt.min_processors} processors "
                                         "or more (EC2 would launch its default size, whatever min_processors says)"))
    if mt.capacity_types and options_of(mt.connector, EC2Machinetype).spot:
        problems.append(("spot", "says the capacity type, and so does capacity_types: keep capacity_types (spot, "
                                 "on-demand, in order) and leave spot out"))
    return problems


def _check(options: EC2Space) -> list[tuple[str, str]]:
    if bool(options.access_key) != bool(options.secret_key):
        missing = "secret_key" if options.access_key else "access_key"
        return [(missing, "access_key and secret_key must be given together")]
    return []


log = logging.getLogger(__name__)

#: EC2 instance states -> ours (anything else: UNKNOWN).
STATE_MAP: dict[str, CloudStatus] = {
    "pending": CloudStatus.STARTING,
    "running": CloudStatus.RUNNING,
    "stopping": CloudStatus.STOPPED,
    "stopped": CloudStatus.STOPPED,
    "shutting-down": CloudStatus.DELETING,
    "terminated": CloudStatus.DELETED,
}

# This offering (instance type, zone, spot price) cannot be had now; another may: the create falls through.
CAPACITY_CODES = {
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity", "SpotMaxPriceTooLow",
    "Unsupported",  # the instance type is not offered in the subnet's zone
}
QUOTA_CODES = {
    "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InsufficientFreeAddressesInSubnet",
    "ResourceLimitExceeded",
}
REJECT_PREFIXES = (
    "InvalidAMIID", "InvalidInstanceType", "InvalidParameter", "InvalidUserData", "InvalidKeyPair", "InvalidSubnet",
    "InvalidGroup", "InvalidBlockDeviceMapping", "InvalidIamInstanceProfile", "OptInRequired",
)
GONE_CODES = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}
AUTH_CODES = {  # the credentials, or what they are allowed: to be fixed by the site, not retried
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
    "RequestExpired", "UnrecognizedClientException",
}
MAX_USER_DATA = 16 * 1024  # before base64
QUOTA_SECONDS = 3600  # the vCPU quota is asked at most hourly
ON_DEMAND_VCPU_QUOTA = "L-1216C47A"  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances


THROTTLE_CODES = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}


def _transient(error: Exception) -> bool:
    """Whether a botocore error will likely pass by itself: throttling, a 5xx, a timeout or a lost connection."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return True  # BotoCoreError: connection and timeout errors
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code in THROTTLE_CODES or status >= 500


def map_state(name: str) -> CloudStatus:
    return STATE_MAP.get(name, CloudStatus.UNKNOWN)


def _errors() -> tuple[type[Exception], ...]:
    """What botocore raises for a cloud's failure: its API errors, its own (timeouts, connections), and an
    answer that is not EC2's XML (a proxy's error page). A bug of ours is none of them."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return ClientError, BotoCoreError, ResponseParserError


def map_error(error: Exception, doing: str) -> Exception:
    """vcycle's error for a botocore/boto3 error (raise it ``from`` the original)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", "")) or code
        if code in CAPACITY_CODES:
            return NoCapacity(f"{doing}: {code}: {message}")
        if code in AUTH_CODES:
            return Unauthorized(f"{doing}: {code}: {message} (check the space's access_key and secret_key, and "
                                f"what their IAM policy allows)")
        if code in QUOTA_CODES:
            return QuotaExceeded(f"{doing}: {code}: {message}")
        if code.startswith(REJECT_PREFIXES):
            return LaunchRejected(f"{doing}: {code}: {message}")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in THROTTLE_CODES or status == 429:  # botocore's own jittered retries are spent
            headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return Throttled(f"{doing}: {code or status}: {message}", retry_after(headers.get("retry-after")))
        return CloudUnavailable(f"{doing}: {code or status}: {message}")
    if isinstance(error, BotoCoreError):
        return CloudUnavailable(f"{doing}: {error}")
    if isinstance(error, ResponseParserError):  # its text repeats the page: a line of it is enough
        page = str(error).partition("\n")[2].strip()[:80]
        return CloudUnavailable(f"{doing}: the endpoint answered with a page that is not EC2's XML (a proxy's error "
                                f"page?){': ' + page if page else ''}")
    return CloudUnavailable(f"{doing}: {error!r}")


@contextmanager
def _mapped(doing: str) -> Iterator[None]:
    try:
        yield
    except _errors() as error:
        raise map_error(error, doing) from error


SPOT_PRICE_SECONDS = 300  # spot prices are asked again after this


class EC2Connector:
    """One EC2 region (or EC2-compatible endpoint) as a vcycle space."""

    api = "ec2"
    max_user_data_bytes = MAX_USER_DATA

    def __init__(self, client: Any, space: str, *, subnet_ids: tuple[str, ...] = (),
                 security_group_ids: tuple[str, ...] = (), key_name: str | None = None,
                 iam_instance_profile: str | None = None, machinetypes: Mapping[str, MachinetypeOptions] | None = None,
                 quotas: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.space = space
        self.subnet_ids = subnet_ids
        self.security_group_ids = security_group_ids
        self.key_name = key_name
        self.iam_instance_profile = iam_instance_profile
        self.machinetypes = dict(machinetypes or {})
        self.quotas = quotas
        self.clock = clock
        self._lock = threading.Lock()
        self._vcpus: dict[str, int] = {}
        self._images: dict[str, tuple[str, str | None]] = {}  # root_image -> (ami id, root device name)
        self._recent: dict[str, CloudMachine] = {}  # request id -> created, for retries within this process
        self._subnet_use: dict[str, int] = {}
        self._subnet_zones: dict[str, str] | None = None  # subnet -> its zone, asked once when a zone is named
        self._quota: tuple[float, int | None] | None = None  # (asked again after, the quota)
        self._names: dict[str, str] = {}  # our live machines' names -> their request ids, from listings and creates
        self._not_offered: set[str] = set()  # instance types the region answered it does not know
        self._spot: tuple[float, frozenset[str], dict[str, float]] | None = None  # (asked again after, types, prices)

    def guard_requests(self, guard: Callable[[], None]) -> None:
        """Ask ``guard`` before every HTTP request the client sends (each page of a listing, each retry): a
        manager whose lease of the space lapsed in the middle of a call sends nothing more for it."""
        self.client.meta.events.register("before-send.ec2", lambda **_: guard())

    # --- listing ------------------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        found: list[CloudMachine] = []
        with _mapped("DescribeInstances"):
            pages = self.client.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{TAG_SPACE}", "Values": [self.space]}],
                PaginationConfig={"PageSize": 1000})
            instances = [i for page in pages for reservation in page.get("Reservations", [])
                         for i in reservation.get("Instances", [])]
        self._sizes({i.get("InstanceType", "") for i in instances if "CpuOptions" not in i})
        use: dict[str, int] = {}
        names: dict[str, str] = {}
        for instance in instances:
            machine = self._machine(instance)
            found.append(machine)
            subnet = instance.get("SubnetId")
            if subnet and machine.owner is not None:
                use[subnet] = use.get(subnet, 0) + 1
            if machine.owner is not None and machine.status is not CloudStatus.DELETED:
                names[machine.name] = machine.owner.request_id
        with self._lock:
            self._subnet_use = use
            self._names = names
        return found

    def _machine(self, instance: Mapping[str, Any]) -> CloudMachine:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        cpu = instance.get("CpuOptions")
        vcpus = cpu["CoreCount"] * cpu["ThreadsPerCore"] if cpu else self._vcpus.get(instance.get("InstanceType", ""))
        state = str(instance.get("State", {}).get("Name", ""))
        return CloudMachine(
            id=instance["InstanceId"], name=tags.get("Name", instance["InstanceId"]), status=map_state(state),
            owner=OwnerTags.from_mapping(tags), processors=vcpus, created_at=instance.get("LaunchTime"),
            detail=state, zone=instance.get("Placement", {}).get("AvailabilityZone"),
            flavor=instance.get("InstanceType"), ip=instance.get("PrivateIpAddress"))

    # --- sizes and quota ----------------------------------------------------------------

    def _learn_vcpus(self, types: set[str]) -> None:
        unknown = sorted(t for t in types if t and t not in self._vcpus)
        if not unknown:
            return
        with _mapped("DescribeInstanceTypes"):
            pages = self.client.get_paginator("describe_instance_types").paginate(InstanceTypes=unknown)
            for page in pages:
                for item in page.get("InstanceTypes", []):
                    self._vcpus[item["InstanceType"]] = int(item["VCpuInfo"]["DefaultVCpus"])

    def _sizes(self, types: set[str]) -> None:
        """Learn the vCPUs of ``types``; a type the region does not offer is left unknown (remembered, and said
        once), never a failure of the listing or of the other types."""
        try:
            self._learn_vcpus(types - self._not_offered)
        except LaunchRejected:  # a type this region does not know: size the others one by one
            for name in sorted(types - set(self._vcpus) - self._not_offered):
                try:
                    self._learn_vcpus({name})
                except LaunchRejected as exc:
                    self._not_offered.add(name)
                    log.warning("space=%s instance type %s is not offered in this region: %s", self.space, name, exc)

    def flavors(self) -> Mapping[str, int]:
        """vCPUs of the instance types the machinetypes name that the region offers (looked up once, cached):
        a type it does not offer is left out, so the planner never picks it."""
        wanted = {name for mt in self.machinetypes.values() for name in mt.flavor_names}
        self._sizes(wanted)
        return {name: self._vcpus[name] for name in wanted if name in self._vcpus}

    def prices(self, offerings: Sequence[Offering]) -> Mapping[str, float]:
        """The current spot price of each spot offering that names its instance type, by offering key, from
        DescribeSpotPriceHistory (Linux/UNIX, the newest price of each type and zone), asked every
        SPOT_PRICE_SECONDS; an offering that names no zone costs the dearest of the type's zones."""
        types = frozenset(o.flavor for o in offerings if o.capacity == SPOT and o.flavor)
        if not types:
            return {}
        now = self.clock()
        if self._spot is not None and now < self._spot[0] and types <= self._spot[1]:
            return self._spot[2]
        newest: dict[tuple[str, str], tuple[str, float]] = {}
        with _mapped("DescribeSpotPriceHistory"):
            pages = self.client.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=sorted(types), ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                StartTime=datetime.now(UTC))
            for page in pages:
                for item in page.get("SpotPriceHistory", []):
                    where = (item["InstanceType"], item["AvailabilityZone"])
                    stamp = str(item.get("Timestamp", ""))
                    if where not in newest or stamp > newest[where][0]:
                        newest[where] = (stamp, float(item["SpotPrice"]))
        found: dict[str, float] = {}
        for (kind, zone), (_, price) in sorted(newest.items()):
            found[Offering(kind, zone, SPOT).key] = price
            anywhere = Offering(kind, None, SPOT).key
            found[anywhere] = max(found.get(anywhere, 0.0), price)
        self._spot = (now + SPOT_PRICE_SECONDS, types, found)
        return found

    def capacity(self) -> int | None:
        """The account's on-demand vCPU quota, from Service Quotas, asked hourly; None where it cannot be had.

        Throttling and outages keep the last known quota and ask again next cycle; a refusal (no permission,
        no such quota) or an answer without a quota is logged and asked again in an hour."""
        if self.quotas is None:
            return None
        now = self.clock()
        if self._quota is not None and now < self._quota[0]:
            return self._quota[1]
        known = self._quota[1] if self._quota is not None else None
        value: int | None
        try:
            answer = self.quotas.get_service_quota(ServiceCode="ec2", QuotaCode=ON_DEMAND_VCPU_QUOTA)
            value = int(answer["Quota"]["Value"])
        except _errors() as error:
            mapped = map_error(error, f"GetServiceQuota {ON_DEMAND_VCPU_QUOTA}")
            if isinstance(mapped, CloudUnavailable) and _transient(error):
                log.warning("space=%s vCPU quota not read now, %s kept, asked again next cycle: %s", self.space,
                            "none" if known is None else known, mapped)
                return known
            log.warning("space=%s vCPU quota cannot be read, none assumed, asked again in %d s: %s", self.space,
                        QUOTA_SECONDS, mapped)
            value = None
        except (KeyError, ValueError, TypeError) as error:
            log.warning("space=%s vCPU quota answer without a quota (%r), none assumed, asked again in %d s",
                        self.space, error, QUOTA_SECONDS)
            value = None
        self._quota = (now + QUOTA_SECONDS, value)
        return value

    # --- create and delete -------------------------------------------------------------

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        with self._lock:
            done = self._recent.get(spec.request_id)
            other = self._names.get(spec.name)
        if done is not None:
            return done
        if other is not None and other != spec.request_id:
            raise LaunchRejected(f"an instance named {spec.name} exists for another request ({other})")
        user_data = fit_user_data(spec.user_data, self.max_user_data_bytes)
        request = self._request(spec, user_data)
        with _mapped(f"RunInstances {spec.name}"):
            reservation = self.client.run_instances(**request)
        machine = self._machine(reservation["Instances"][0])
        if machine.processors is None:
            machine = CloudMachine(machine.id, machine.name, machine.status, machine.owner, spec.processors,
                                   machine.created_at, machine.detail, machine.zone, machine.flavor, machine.ip)
        with self._lock:
            self._recent[spec.request_id] = machine
            self._names[spec.name] = spec.request_id
            if len(self._recent) > 10_000:
                self._recent.pop(next(iter(self._recent)))
        return machine

    def _request(self, spec: LaunchSpec, user_data: bytes) -> dict[str, Any]:
        if not spec.image:
            raise LaunchRejected(f"machinetype {spec.machinetype}: root_image = image:ami-... (or image:NAME) is "
                                 "required for EC2")
        ami, root_device = self._image(spec.image)
        tags = [{"Key": "Name", "Value": spec.name}] + [{"Key": k, "Value": v} for k, v in spec.owner.as_dict().items()]
        tags += [{"Key": k, "Value": v} for k, v in spec.metadata.items()]
        request: dict[str, Any] = {
            "ImageId": ami, "MinCount": 1, "MaxCount": 1, "ClientToken": spec.request_id, "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",  # a machine that powers off ends: no manager needed
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if spec.flavor:
            request["InstanceType"] = spec.flavor
        subnet = self._subnet(spec.zone)
        if subnet:
            request["SubnetId"] = subnet
        elif spec.zone:
            request["Placement"] = {"AvailabilityZone": spec.zone}
        if self.security_group_ids:
            request["SecurityGroupIds"] = list(self.security_group_ids)
        if self.key_name:
            request["KeyName"] = self.key_name
        if self.iam_instance_profile:
            key = "Arn" if self.iam_instance_profile.startswith("arn:") else "Name"
            request["IamInstanceProfile"] = {key: self.iam_instance_profile}
        mt = self.machinetypes.get(spec.machinetype, MachinetypeOptions())
        if spec.capacity == SPOT or (spec.capacity is None and mt.cloud.spot):
            spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if mt.cloud.spot_max_price is not None:
                spot["MaxPrice"] = f"{mt.cloud.spot_max_price:g}"
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        size = mt.volume_gb_per_processor * spec.processors
        if size and root_device:
            request["BlockDeviceMappings"] = [{"DeviceName": root_device,
                                               "Ebs": {"VolumeSize": size, "DeleteOnTermination": True}}]
        return request

    def _subnet(self, zone: str | None) -> str | None:
        """The subnet (of those in ``zone``, if named) with the fewest of our instances (ties: the first listed).
        Raises LaunchRejected when no subnet is in the zone."""
        if not self.subnet_ids:
            return None
        subnets = self.subnet_ids
        if zone is not None:
            zones = self._zones_of_subnets()
            subnets = tuple(s for s in subnets if zones.get(s) == zone)
            if not subnets:
                raise LaunchRejected(f"no subnet of subnet_ids is in zone {zone} (" + ", ".join(
                    f"{s} in {zones.get(s, 'no zone known')}" for s in self.subnet_ids) + ")")
        with self._lock:
            chosen = min(subnets, key=lambda s: self._subnet_use.get(s, 0))
            self._subnet_use[chosen] = self._subnet_use.get(chosen, 0) + 1
        return chosen

    def _zones_of_subnets(self) -> dict[str, str]:
        """subnet -> its availability zone, for subnet_ids (asked once)."""
        if self._subnet_zones is None:
            with _mapped("DescribeSubnets"):
                found = self.client.describe_subnets(SubnetIds=list(self.subnet_ids)).get("Subnets", [])
            self._subnet_zones = {s["SubnetId"]: s.get("AvailabilityZone", "") for s in found}
        return self._subnet_zones

    def _image(self, root_image: str) -> tuple[str, str | None]:
        """(AMI id, root device name) for ``image:ami-...`` or ``image:NAME`` (newest of that name)."""
        if root_image in self._images:
            return self._images[root_image]
        wanted = root_image.removeprefix("image:")
        query: dict[str, Any] = ({"ImageIds": [wanted]} if wanted.startswith("ami-")
                                 else {"Filters": [{"Name": "name", "Values": [wanted]}]})
        with _mapped(f"DescribeImages {wanted}"):
            images = self.client.describe_images(**query).get("Images", [])
        if not images:
            raise LaunchRejected(f"root_image {root_image}: no such image in this region")
        newest = max(images, key=lambda i: i.get("CreationDate", ""))
        found = (newest["ImageId"], newest.get("RootDeviceName"))
        self._images[root_image] = found
        return found

    def check_images(self, wanted: Mapping[str, str | None]) -> dict[str, str]:
        """machinetype -> what is wrong with its root_image in this region (looked up, nothing changed)."""
        problems = {}
        for machinetype, root_image in sorted(wanted.items()):
            try:
                if not root_image:
                    raise LaunchRejected("no root_image")
                self._image(root_image)
            except LaunchRejected as exc:
                problems[machinetype] = str(exc)
        return problems

    def delete_machine(self, machine_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.terminate_instances(InstanceIds=[machine_id])
        except _errors() as error:
            if isinstance(error, ClientError) and str(error.response.get("Error", {}).get("Code")) in GONE_CODES:
                return
            raise map_error(error, f"TerminateInstances {machine_id}") from error


def make_client(options: EC2Space, settings: Settings, service: str = "ec2", api_timeout: float = 60.0) -> Any:
    """A boto3 client for a space's keys, with botocore's standard retry mode: every try of a call gets its
    share of ``api_timeout``, so that one call with its retries ends within it."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(
        profile_name=options.profile, aws_access_key_id=options.access_key,
        aws_secret_access_key=options.secret_key, region_name=options.region)
    per_try = max(1.0, api_timeout / options.api_attempts)
    config = BotoConfig(retries={"mode": "standard", "total_max_attempts": options.api_attempts},
                        connect_timeout=min(per_try, 10.0), read_timeout=per_try,
                        max_pool_connections=max(10, settings.create_workers + 2), user_agent_extra="vcycle")
    return session.client(service, endpoint_url=options.url if service == "ec2" else None, config=config)


def make_connector(space: SpaceConfig, settings: Settings) -> EC2Connector:
    """The connector of an ``api = ec2`` space."""
    options = options_of(space.connector, EC2Space)
    machinetypes = {name: MachinetypeOptions(options_of(mt.connector, EC2Machinetype), mt.volume_gb_per_processor,
                                             mt.flavor_names)
                    for name, mt in space.machinetypes.items()}
    quotas = None if options.url else make_client(options, settings, "service-quotas", space.api_timeout_seconds)
    return EC2Connector(make_client(options, settings, api_timeout=space.api_timeout_seconds), space.name,
                        subnet_ids=options.subnet_ids,
                        security_group_ids=options.security_group_ids, key_name=options.key_name,
                        iam_instance_profile=options.iam_instance_profile, machinetypes=machinetypes,
                        quotas=quotas)


PLUGIN = ConnectorPlugin(make=make_connector, max_user_data_bytes=MAX_USER_DATA, space=EC2Space,
                         machinetype=EC2Machinetype, check=_check, check_machinetype=_check_machinetype,
                         zones=True, capacity_types=(ON_DEMAND, SPOT),
                         no_effect={"version": "boto3 chooses the EC2 API version",
                                    "service": "boto3 signs requests for the ec2 service"})
