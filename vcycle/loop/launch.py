"""One new machine made ready for its create: identity, user-data, the REQUESTED record and the LaunchSpec.

The executor prepares every create here, and so does ``vcycle render``, so
that what the command shows is what a real create would send. Randomness
comes from ``secrets`` unless ``entropy`` is given.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vcycle.connectors.base import entrypoint
from vcycle.core import identity, mjf, rules
from vcycle.core.model import CreateOrder, LaunchSpec, MachineRecord, Offering, new_record
from vcycle.core.sections import MachinetypeConfig, SpaceConfig
from vcycle.core.states import MachineState
from vcycle.errors import LaunchRejected, RenderError
from vcycle.userdata.render import render_user_data
from vcycle.userdata.sources import Fetcher

# (space, machinetype, machine name, create order, request id, machine token) -> user-data bytes
Renderer = Callable[[SpaceConfig, MachinetypeConfig, str, CreateOrder, str, str], bytes]


def renderer(manager: str, fetcher: Fetcher | None) -> Renderer:
    """The user-data renderer of a manager: the machinetype's templates, fetched through ``fetcher``."""
    return functools.partial(render_user_data, manager=manager, fetcher=fetcher)


def entropy() -> bytes:
    """Fresh randomness for one new identity."""
    return secrets.token_bytes(identity.ENTROPY_BYTES)


@dataclass(frozen=True, slots=True)
class Launch:
    """A machine ready to be created: its record to commit first, and what the connector gets."""

    record: MachineRecord
    spec: LaunchSpec


def prepare(space: SpaceConfig, mt: MachinetypeConfig, order: CreateOrder, *, manager: str, render: Renderer,
            now: datetime, randomness: bytes | None = None) -> Launch:
    """The launch of one machine for ``order`` (the pilot it runs, if any, names it). Raises RenderError."""
    who = identity.new_identity(mt.name, randomness or entropy(), order.pilot.name if order.pilot else None)
    user_data = render(space, mt, who.name, order, who.request_id, who.token)
    if space.runs_script:
        try:
            entrypoint(user_data)
        except LaunchRejected as exc:
            raise RenderError(f"user_data = {mt.user_data}: {exc}") from None
    reason = "intent: " + order.reason + (f"; runs pilot stamp {order.pilot.stamp}" if order.pilot else "")
    if order.zone or order.capacity:
        reason += f"; offering {order.offering}"
    features = mjf.features(mt, order.processors, now, order.shutdown_at, space.shutdown_time)
    record = new_record(name=who.name, space=space.name, machinetype=mt.name, state=MachineState.REQUESTED,
                        processors=order.processors, now=now, request_id=who.request_id, reason=reason,
                        manager=manager, flavor=order.flavor, zone=order.zone, capacity=order.capacity,
                        hs06=order.hs06,
                        shutdown_at=order.shutdown_at,
                        token_hash=who.token_hash, features=json.dumps(features, sort_keys=True),
                        made_by=mt.made_by or None)
    spec = LaunchSpec(who.name, who.request_id, space.name, mt.name, manager, order.processors, order.flavor,
                      order.zone, mt.root_image, user_data, order.shutdown_at, identity.metadata(space, who.name),
                      who.token, order.capacity)
    return Launch(record, spec)


def sample(space: SpaceConfig, mt: MachinetypeConfig, *, manager: str, render: Renderer, now: datetime,
           reason: str) -> Launch:
    """A new machine of ``mt`` as the next create would make it when the cloud is not asked: the first of its
    offering of its flavor_names, zones and capacity_types, with min_processors (``vcycle render``,
    check-config's trial). Raises RenderError."""
    found = rules.offerings(mt, None)
    offering, processors = (Offering(), mt.min_processors) if isinstance(found, str) else found[0]
    order = identity.create_order(space, mt, processors, offering, now, reason)
    return prepare(space, mt, order, manager=manager, render=render, now=now)
