"""EC2 and EC2-compatible clouds through boto3.

One space is one region of one account (or one EC2-compatible endpoint).
Machines are instances tagged at launch with vcycle's ownership tags; the
listing is one paginated DescribeInstances filtered by the space's tag
(terminated instances, listed by EC2 for a while, map to DELETED, which sync
reads as gone; filtering them out server-side made moto four times slower). The
request id is the ClientToken, so EC2 itself never makes two instances for
one request when botocore retries. Throttling and 5xx are retried by
botocore's standard retry mode; what still fails becomes CloudUnavailable.

The old vcycle's keys (url, access_key, secret_key, region) still work;
boto3's own credential chain (profile, environment, instance role) is
preferred. boto3 is imported only when a connector is made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vcycle.userdata.size import fit_user_data

from vcycle.errors import CloudUnavailable, LaunchRejected, QuotaExceeded
from vcycle.model import TAG_SPACE, CloudMachine, CloudStatus, LaunchSpec, OwnerTags
from vcycle.options import ApiOptions, Option, boolean, integer, number, options, text, words

if TYPE_CHECKING:  # pragma: no cover - types only
    from vcycle.config import Settings, SpaceConfig


def _check(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    if bool(values.get("access_key")) != bool(values.get("secret_key")):
        missing = "secret_key" if values.get("access_key") else "access_key"
        return [(missing, "access_key and secret_key must be given together")]
    return []


OPTIONS = ApiOptions(
    space=options(
        Option("url", text, help="endpoint; omitted = AWS's regional endpoint"),
        Option("region", text, "us-east-1"),
        Option("access_key", text, secret=True),
        Option("secret_key", text, secret=True),
        Option("profile", text),
        Option("subnet_ids", words, ()),
        Option("security_group_ids", words, ()),
        Option("key_name", text),
        Option("iam_instance_profile", text),
        Option("api_attempts", integer(1, 20), 5, help="tries of one API call, retries included"),
        Option("api_timeout_seconds", number(1.0), 30.0),
    ),
    machinetype=options(
        Option("spot", boolean, False),
        Option("spot_max_price", number(0.0)),
    ),
    no_effect={
        "version": "boto3 chooses the EC2 API version",
        "service": "boto3 signs requests for the ec2 service",
    },
    check=_check,
)

#: EC2 instance states -> ours (anything else: UNKNOWN).
STATE_MAP: dict[str, CloudStatus] = {
    "pending": CloudStatus.STARTING,
    "running": CloudStatus.RUNNING,
    "stopping": CloudStatus.STOPPED,
    "stopped": CloudStatus.STOPPED,
    "shutting-down": CloudStatus.DELETING,
    "terminated": CloudStatus.DELETED,
}

QUOTA_CODES = {
    "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
    "InsufficientCapacity", "SpotMaxPriceTooLow", "InsufficientFreeAddressesInSubnet", "ResourceLimitExceeded",
}
REJECT_PREFIXES = (
    "InvalidAMIID", "InvalidInstanceType", "InvalidParameter", "InvalidUserData", "InvalidKeyPair", "InvalidSubnet",
    "InvalidGroup", "InvalidBlockDeviceMapping", "Unsupported", "InvalidIamInstanceProfile", "OptInRequired",
)
GONE_CODES = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}
MAX_USER_DATA = 16 * 1024  # before base64
MAX_USER_DATA_BYTES = MAX_USER_DATA
QUOTA_SECONDS = 3600  # the vCPU quota is asked at most hourly
ON_DEMAND_VCPU_QUOTA = "L-1216C47A"  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances


def map_state(name: str) -> CloudStatus:
    return STATE_MAP.get(name, CloudStatus.UNKNOWN)


def map_error(error: Exception, doing: str) -> Exception:
    """vcycle's error for a botocore/boto3 error (raise it ``from`` the original)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", "")) or code
        if code in QUOTA_CODES:
            return QuotaExceeded(f"{doing}: {code}: {message}")
        if code.startswith(REJECT_PREFIXES):
            return LaunchRejected(f"{doing}: {code}: {message}")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return CloudUnavailable(f"{doing}: {code or status}: {message}")
    if isinstance(error, BotoCoreError):
        return CloudUnavailable(f"{doing}: {error}")
    return CloudUnavailable(f"{doing}: {error!r}")


@contextmanager
def _mapped(doing: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise map_error(error, doing) from error


class EC2Connector:
    """One EC2 region (or EC2-compatible endpoint) as a vcycle space."""

    api = "ec2"
    max_user_data_bytes = MAX_USER_DATA

    def __init__(self, client: Any, space: str, *, subnet_ids: tuple[str, ...] = (),
                 security_group_ids: tuple[str, ...] = (), key_name: str | None = None,
                 iam_instance_profile: str | None = None, machinetypes: Mapping[str, Mapping[str, Any]] | None = None,
                 quotas: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.space = space
        self.subnet_ids = subnet_ids
        self.security_group_ids = security_group_ids
        self.key_name = key_name
        self.iam_instance_profile = iam_instance_profile
        self.machinetypes = dict(machinetypes or {})  # machinetype -> {spot, spot_max_price, volume_gb_per_processor}
        self.quotas = quotas
        self.clock = clock
        self._lock = threading.Lock()
        self._vcpus: dict[str, int] = {}
        self._images: dict[str, tuple[str, str | None]] = {}  # root_image -> (ami id, root device name)
        self._recent: dict[str, CloudMachine] = {}  # request id -> created, for retries within this process
        self._subnet_use: dict[str, int] = {}
        self._quota: tuple[float, int | None] | None = None

    # --- listing ------------------------------------------------------------------------

    def list_machines(self) -> list[CloudMachine]:
        found: list[CloudMachine] = []
        with _mapped("DescribeInstances"):
            pages = self.client.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{TAG_SPACE}", "Values": [self.space]}],
                PaginationConfig={"PageSize": 1000})
            instances = [i for page in pages for reservation in page.get("Reservations", [])
                         for i in reservation.get("Instances", [])]
        self._learn_vcpus({i.get("InstanceType", "") for i in instances if "CpuOptions" not in i})
        use: dict[str, int] = {}
        for instance in instances:
            machine = self._machine(instance)
            found.append(machine)
            subnet = instance.get("SubnetId")
            if subnet and machine.owner is not None:
                use[subnet] = use.get(subnet, 0) + 1
        with self._lock:
            self._subnet_use = use
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

    def flavors(self) -> Mapping[str, int]:
        """vCPUs of the instance types the machinetypes name (looked up once, then cached)."""
        wanted = {name for mt in self.machinetypes.values() for name in mt.get("flavor_names", ())}
        try:
            self._learn_vcpus(wanted)
        except LaunchRejected:  # a type this region does not know: size the others one by one
            for name in sorted(wanted - set(self._vcpus)):
                try:
                    self._learn_vcpus({name})
                except LaunchRejected:
                    continue
        return {name: self._vcpus[name] for name in wanted if name in self._vcpus}

    def capacity(self) -> int | None:
        """The account's on-demand vCPU quota, from Service Quotas (hourly); None where not offered."""
        if self.quotas is None:
            return None
        now = self.clock()
        if self._quota is not None and now - self._quota[0] < QUOTA_SECONDS:
            return self._quota[1]
        from botocore.exceptions import BotoCoreError, ClientError

        value: int | None
        try:
            answer = self.quotas.get_service_quota(ServiceCode="ec2", QuotaCode=ON_DEMAND_VCPU_QUOTA)
            value = int(answer["Quota"]["Value"])
        except (ClientError, BotoCoreError, KeyError, ValueError):
            value = None
        self._quota = (now, value)
        return value

    # --- create and delete -------------------------------------------------------------

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        with self._lock:
            done = self._recent.get(spec.request_id)
        if done is not None:
            return done
        user_data = fit_user_data(spec.user_data, MAX_USER_DATA)
        request = self._request(spec, user_data)
        with _mapped(f"RunInstances {spec.name}"):
            reservation = self.client.run_instances(**request)
        machine = self._machine(reservation["Instances"][0])
        if machine.processors is None:
            machine = CloudMachine(machine.id, machine.name, machine.status, machine.owner, spec.processors,
                                   machine.created_at, machine.detail, machine.zone, machine.flavor, machine.ip)
        with self._lock:
            self._recent[spec.request_id] = machine
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
            "InstanceInitiatedShutdownBehavior": "stop",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if spec.flavor:
            request["InstanceType"] = spec.flavor
        subnet = self._subnet()
        if subnet:
            request["SubnetId"] = subnet
        if self.security_group_ids:
            request["SecurityGroupIds"] = list(self.security_group_ids)
        if self.key_name:
            request["KeyName"] = self.key_name
        if self.iam_instance_profile:
            key = "Arn" if self.iam_instance_profile.startswith("arn:") else "Name"
            request["IamInstanceProfile"] = {key: self.iam_instance_profile}
        mt = self.machinetypes.get(spec.machinetype, {})
        if mt.get("spot"):
            spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if mt.get("spot_max_price") is not None:
                spot["MaxPrice"] = f"{mt['spot_max_price']:g}"
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        size = int(mt.get("volume_gb_per_processor") or 0) * spec.processors
        if size and root_device:
            request["BlockDeviceMappings"] = [{"DeviceName": root_device,
                                               "Ebs": {"VolumeSize": size, "DeleteOnTermination": True}}]
        return request

    def _subnet(self) -> str | None:
        """The subnet with the fewest of our instances (ties: the first listed)."""
        if not self.subnet_ids:
            return None
        with self._lock:
            chosen = min(self.subnet_ids, key=lambda s: self._subnet_use.get(s, 0))
            self._subnet_use[chosen] = self._subnet_use.get(chosen, 0) + 1
        return chosen

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

    def delete_machine(self, machine_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.terminate_instances(InstanceIds=[machine_id])
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in GONE_CODES:
                return
            raise map_error(error, f"TerminateInstances {machine_id}") from error
        except Exception as error:  # botocore's own errors (timeouts, connection)
            raise map_error(error, f"TerminateInstances {machine_id}") from error


def make_client(values: Mapping[str, Any], settings: Settings, service: str = "ec2") -> Any:
    """A boto3 client for a space's keys, with botocore's standard retry mode."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(
        profile_name=values.get("profile"), aws_access_key_id=values.get("access_key"),
        aws_secret_access_key=values.get("secret_key"), region_name=values.get("region"))
    config = BotoConfig(retries={"mode": "standard", "total_max_attempts": values.get("api_attempts", 5)},
                        connect_timeout=values.get("api_timeout_seconds", 30.0),
                        read_timeout=values.get("api_timeout_seconds", 30.0),
                        max_pool_connections=max(10, settings.create_workers + 2), user_agent_extra="vcycle")
    return session.client(service, endpoint_url=values.get("url") if service == "ec2" else None, config=config)


def make_connector(space: SpaceConfig, settings: Settings) -> EC2Connector:
    """The connector of an ``api = ec2`` space."""
    values = space.values
    machinetypes = {name: {"spot": mt.values.get("spot"), "spot_max_price": mt.values.get("spot_max_price"),
                           "volume_gb_per_processor": mt.volume_gb_per_processor, "flavor_names": mt.flavor_names}
                    for name, mt in space.machinetypes.items()}
    quotas = None if values.get("url") else make_client(values, settings, "service-quotas")
    return EC2Connector(make_client(values, settings), space.name, subnet_ids=values["subnet_ids"],
                        security_group_ids=values["security_group_ids"], key_name=values["key_name"],
                        iam_instance_profile=values["iam_instance_profile"], machinetypes=machinetypes,
                        quotas=quotas)
