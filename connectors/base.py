"""The connector contract: what vcycle asks of every cloud, and how a connector module declares itself.

Each method says whether it is required or optional. Only vcycle's own
errors leave a connector (CloudUnavailable and its Unauthorized and Throttled,
QuotaExceeded and its NoCapacity, LaunchRejected, NotFound), raised ``from``
the SDK's error. A connector module ends with
``PLUGIN = ConnectorPlugin(...)``: the keys it adds to its spaces and
machinetypes (dataclasses of ``options.key`` fields), the largest user-data
its cloud takes, and ``make``, which builds the connector with its SDK
client (tests hand one pointed at an emulator to the connector's class).
User-data is fitted to the cloud's limit by ``fit_user_data``, the one helper
every connector calls before its create.
"""

from __future__ import annotations

import email
import email.utils
import gzip
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vcycle.core.model import CloudMachine, LaunchSpec
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.errors import LaunchRejected


class Connector(Protocol):
    """One space of one cloud."""

    api: str
    #: The largest user-data, in bytes before any encoding, that the cloud accepts.
    max_user_data_bytes: int

    def list_machines(self) -> list[CloudMachine]:
        """Required. Every machine in the space, ours (with owner tags) and foreign, in one
        listing (paginated inside if need be). Raises CloudUnavailable."""
        ...

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        """Required. Create one machine tagged with ``spec.owner``, its user-data fitted with
        ``fit_user_data``; idempotent on ``spec.name`` and ``spec.request_id``: a retried create returns
        the machine the first one made, never a second one, and a create with the name of a machine of
        another request is refused (LaunchRejected), that machine left alone. Raises QuotaExceeded,
        LaunchRejected or CloudUnavailable."""
        ...

    def delete_machine(self, machine_id: str) -> None:
        """Required. Delete the machine with this cloud id (never by name); an absent machine is
        success. Raises CloudUnavailable."""
        ...

    def capacity(self) -> int | None:
        """Optional (return None). The space's processor quota, counting foreign machines."""
        ...

    def flavors(self) -> Mapping[str, int] | None:
        """Optional (return None). Flavor name -> vcpus of the flavors the cloud offers (those the machinetypes
        name, at least), looked up at most once per cycle; None when the cloud cannot tell. Raises
        CloudUnavailable."""
        ...

    # Optional, looked up with getattr: ``drain_machine(machine_id) -> None``, ask a machine with no batch
    # system to finish its work and take no more (the local connector: SIGTERM to its entrypoint alone, which
    # the shipped templates take as a drain); raises CloudUnavailable. Without it, a drained machine learns it
    # from its heartbeat's answer only.
    # ``notices(now) -> list[str]``, warnings for the cycle report
    # and ``vcycle status`` (an expiring credential); cheap, as it is called every cycle.
    # ``check_images(images: Mapping[str, str | None]) -> dict[str, str]``: for ``vcycle check-config
    # --online``, machinetype -> what is wrong with its root_image, found without changing anything.


@dataclass(frozen=True, slots=True)
class ConnectorPlugin:
    """What a connector module declares (its ``PLUGIN``)."""

    make: Callable[[SpaceConfig, Settings], Connector]  # the connector of one space, its SDK client made
    max_user_data_bytes: int  # the largest user-data its cloud takes, before any encoding
    space: type | None = None  # the dataclass of the keys it adds to [space] sections
    machinetype: type | None = None  # ... and to [machinetype] sections
    no_effect: Mapping[str, str] = field(default_factory=dict)  # old keys of this api that do nothing now
    check: Callable[[Any], list[tuple[str, str]]] | None = None  # checks across its space keys: [(key, problem)]
    # what a machinetype of its spaces must have: [(key, problem)]
    check_machinetype: Callable[[MachinetypeConfig], list[tuple[str, str]]] | None = None
    # its machines run the user-data as a script (containers, processes), not through cloud-init: templates
    # render their script form, and user-data with no script part is refused before any create
    runs_script: bool = False
    # the parts of an offering it makes as the LaunchSpec says, where a machinetype names them: a zone
    # (LaunchSpec.zone) and these capacity types (LaunchSpec.capacity); naming others is a configuration error
    zones: bool = False
    capacity_types: tuple[str, ...] = ()


def fit_user_data(data: bytes, limit: int) -> bytes:
    """``data`` as is if it fits in ``limit`` bytes, else gzipped if that fits; LaunchRejected otherwise.

    cloud-init reads gzip-compressed user-data (it looks for the gzip magic bytes), so user-data larger
    than a cloud's limit is gzipped when that makes it fit; otherwise it is refused before any cloud call.
    """
    if len(data) <= limit:
        return data
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    if len(packed) <= limit:
        return packed
    raise LaunchRejected(f"user-data is {len(data)} bytes ({len(packed)} gzipped), over the {limit} bytes "
                         f"this cloud accepts")


def retry_after(value: object) -> float | None:
    """The seconds an HTTP Retry-After asks to wait (delta-seconds, or an HTTP-date from now), None when it is
    absent or unreadable: the one reading of it every connector uses for Throttled."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def fits(data: bytes, limit: int) -> str:
    """How ``data`` fits in ``limit``: 'fits', 'fits gzipped' or 'TOO LARGE' (for ``vcycle render``)."""
    try:
        fitted = fit_user_data(data, limit)
    except LaunchRejected:
        return "TOO LARGE"
    return "fits" if fitted is data else "fits gzipped"


def entrypoint(user_data: bytes) -> bytes:
    """The script to run: the user-data itself, or the first shell-script part of a MIME multipart (gzipped
    user-data is read as cloud-init reads it: unzipped first)."""
    if user_data.startswith(b"\x1f\x8b"):
        user_data = gzip.decompress(user_data)
    if user_data.startswith(b"#!"):
        return user_data
    if user_data.lstrip().lower().startswith(b"content-type: multipart/"):
        message = email.message_from_bytes(user_data)
        for part in message.walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.startswith(b"#!"):
                return payload
    raise LaunchRejected("a container runs its user-data as a script: the user-data has no part starting with "
                         "'#!' (use the pilot-container or htcondor-startd template, or a script of your own)")
