"""Offerings within one apply: a create falls through a machinetype's offerings (its (flavor, zone, capacity
type) triples of one size, in order) when the cloud has no capacity for one, and no more than one call
reaches an offering that has none.

The first create of an offering in an apply is its probe: other creates of the same offering wait for its
answer (half the space's api_timeout_seconds at most: then they call anyway, still within the round's bound).
If the cloud had room, they go on in parallel; if it had none (NoCapacity), they skip it for the next offering
at once, and the offering is cooled (a Cooldown, stored with the outcomes: the planner makes nothing on it for
offering_cooldown_seconds).

Some answers are the space's, not the offering's (``space_wide``: credentials refused, Unauthorized; the cloud
asking to slow down, Throttled): after one, no other create of the apply calls the cloud; each fails with that
answer. A quota the cloud says is spent (QuotaExceeded) holds the creates of that size or more the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from vcycle.core.model import CloudMachine, Cooldown, LaunchSpec, Offering
from vcycle.errors import ConnectorError, NoCapacity, QuotaExceeded

PROBING = "probing"
ROOM = "room"


@dataclass(frozen=True)
class Tried:
    """What falling through the offerings gave: the machine and the offering it was made on, or the error of the
    last offering tried (None when every offering was already known to have no room); the offerings found
    without capacity."""

    machine: CloudMachine | None
    offering: Offering | None
    error: ConnectorError | None
    cooled: tuple[Cooldown, ...]
    skipped: tuple[Offering, ...] = ()  # offerings another create of this apply found without capacity


class Offers:
    """What this apply learnt of each (machinetype, offering): probing, room, or the reason it has none."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds  # a probe not answering by then is not waited for (a hung cloud)
        self._known: dict[tuple[str, str], str] = {}
        self._changed = threading.Condition()
        self.stopped: ConnectorError | None = None  # a space_wide answer in this apply: no more create calls
        self.quota: tuple[int, QuotaExceeded] | None = None  # the fewest processors a spent quota refused

    def _begin(self, key: tuple[str, str]) -> str | None:
        """None: call the cloud (as the probe, after one found room, or after a probe did not answer); else why
        the offering has no room."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._known.get(key) != PROBING, self.wait_seconds):
                return None
            found = self._known.get(key)
            if found is None:
                self._known[key] = PROBING
                return None
            return None if found == ROOM else found

    def _end(self, key: tuple[str, str], no_room: str | None) -> None:
        with self._changed:
            if no_room is not None:
                self._known[key] = no_room
            elif self._known.get(key) == PROBING:
                self._known[key] = ROOM
            self._changed.notify_all()

    def create(self, create: Callable[[LaunchSpec], CloudMachine], spec: LaunchSpec, fallbacks: Sequence[Offering],
               now: datetime) -> Tried:
        """``create(spec)`` on ``spec.offering``, then on each of ``fallbacks`` while the cloud has no capacity.
        A ConnectorError other than NoCapacity ends the fall-through (the caller handles it); any other
        exception is raised."""
        cooled: list[Cooldown] = []
        skipped: list[Offering] = []
        last: ConnectorError | None = None
        first = spec.offering
        if self.stopped is not None:
            return Tried(None, first, self.stopped, ())
        if self.quota is not None and spec.processors >= self.quota[0]:
            return Tried(None, first, self.quota[1], ())
        for offering in (first, *fallbacks):
            key = (spec.machinetype, offering.key)
            if self._begin(key) is not None:
                skipped.append(offering)
                continue
            try:
                machine = create(spec if offering == first else replace(
                    spec, flavor=offering.flavor, zone=offering.zone, capacity=offering.capacity))
            except NoCapacity as exc:
                self._end(key, str(exc))
                cooled.append(Cooldown(spec.machinetype, offering.key, now, str(exc)))
                last = exc
                continue
            except ConnectorError as exc:  # the caller's to handle, as for any create
                if exc.space_wide:
                    self.stopped = exc
                elif isinstance(exc, QuotaExceeded) and (self.quota is None or spec.processors < self.quota[0]):
                    self.quota = (spec.processors, exc)
                self._end(key, None)
                return Tried(None, offering, exc, tuple(cooled), tuple(skipped))
            except BaseException:  # a bug: the others need not wait for this probe
                self._end(key, None)
                raise
            self._end(key, None)
            return Tried(machine, offering, None, tuple(cooled), tuple(skipped))
        return Tried(None, None, last, tuple(cooled), tuple(skipped))
