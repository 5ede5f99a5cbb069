"""Who a new machine is: its name, request id and token, the URLs it is given, and the order it is made from.

Computed in this one place, so that a real create, ``vcycle render`` and the
endpoint re-rendering a machine's user-data agree. Randomness is handed in
(``secrets.token_bytes(ENTROPY_BYTES)`` in the loop; fixed bytes in tests).

Pure: no clock, no randomness of its own, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vcycle.core import rules
from vcycle.core.model import CreateOrder, MachineRecord, Offering
from vcycle.core.sections import MachinetypeConfig, SpaceConfig

ENTROPY_BYTES = 64  # what a new identity draws from: name, request id and token
NAME_LENGTH = 10
_ALPHABET = string.ascii_lowercase + string.digits
FEATURES = ("machinefeatures", "jobfeatures", "joboutputs")  # the machine's directories on the endpoint


@dataclass(frozen=True, slots=True)
class Identity:
    """A new machine's name, request id, and its one-time token for the endpoint (only its hash is stored)."""

    name: str
    request_id: str
    token: str = field(repr=False)
    token_hash: str = ""


def machine_name(machinetype: str, entropy: bytes) -> str:
    """``vcycle-MACHINETYPE-xxxxxxxxxx``, as the original vcycle named machines; every character equally
    likely (bytes of 252 and above are skipped: 252 = 7 x 36; the entropy is stretched if too few are left)."""
    chosen = [b % 36 for b in entropy if b < 252]
    block = entropy
    while len(chosen) < NAME_LENGTH:
        block = hashlib.sha256(block).digest()
        chosen += [b % 36 for b in block if b < 252]
    return f"vcycle-{machinetype}-" + "".join(_ALPHABET[i] for i in chosen[:NAME_LENGTH])


def hash_token(token: str) -> str:
    """What the store keeps of a machine's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_identity(machinetype: str, entropy: bytes, name: str | None = None) -> Identity:
    """A new machine's identity from ``ENTROPY_BYTES`` random bytes (``name``: one already chosen, as for a
    pilot DIRAC submitted)."""
    if len(entropy) < ENTROPY_BYTES:
        raise ValueError(f"an identity needs {ENTROPY_BYTES} random bytes, got {len(entropy)}")
    token = base64.urlsafe_b64encode(entropy[:32]).decode().rstrip("=")
    return Identity(name or machine_name(machinetype, entropy[48:]), entropy[32:48].hex(), token, hash_token(token))


def base_url(space: SpaceConfig) -> str:
    """``https://HOST:PORT`` of vcycle's endpoint, as the space's machines reach it."""
    return f"https://{space.https_host}:{space.https_port}"


def machine_urls(space: SpaceConfig, name: str) -> dict[str, str]:
    """Every URL of the machine on vcycle's endpoint: its MJF and joboutputs directories, its heartbeat and
    user-data API, and the heartbeat list of its space."""
    base = base_url(space)
    api = f"{base}/api/v1/machines/{space.name}/{name}"
    urls = {f"{kind}_url": f"{base}/machines/{space.name}/{name}/{kind}" for kind in FEATURES}
    urls.update(heartbeat_machines_url=f"{base}/heartbeatmachines/{space.name}", heartbeat_url=f"{api}/heartbeat",
                user_data_api_url=f"{api}/user-data")
    return urls


def metadata(space: SpaceConfig, name: str) -> dict[str, str]:
    """The machine's MJF and joboutputs URLs as cloud metadata (keys as the old vcycle set them)."""
    urls = machine_urls(space, name)
    return {kind: urls[f"{kind}_url"] for kind in FEATURES}


def create_order(space: SpaceConfig, mt: MachinetypeConfig, processors: int, offering: Offering, now: datetime,
                 reason: str, *, fallbacks: tuple[Offering, ...] = ()) -> CreateOrder:
    """The order for one new machine made at ``now`` on ``offering``: its shutdown time and hs06 from its
    machinetype; ``fallbacks`` the offerings of the same size its create falls through to, in order, for lack
    of capacity."""
    hs06 = mt.hs06_per_processor * processors if mt.hs06_per_processor is not None else None
    deadline = rules.shutdown_deadline(now, mt.max_wallclock_seconds, space.shutdown_time)
    return CreateOrder(space.name, mt.name, processors, offering.flavor, deadline, hs06, reason, fallbacks=fallbacks,
                       zone=offering.zone, capacity=offering.capacity)


def order_for(record: MachineRecord, mt: MachinetypeConfig, reason: str) -> CreateOrder:
    """The order an existing machine was made from (to render its user-data again)."""
    shutdown = record.shutdown_at or record.created_at + timedelta(seconds=mt.max_wallclock_seconds)
    return CreateOrder(record.space, record.machinetype, record.processors, record.flavor, shutdown, record.hs06,
                       reason)
