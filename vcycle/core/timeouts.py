"""Every stuck-state timeout, one row each: how long a machine may stay where it is, and what follows.

A row names the state it guards, the key that sets its length (of
``[settings]`` or of the machine's machinetype; 0 there means never), when
its clock started, and the words of its reason. ``expired(row, ...)`` is
the one check: sync asks it for requests and deletes, the planner for
machines that never started, the batch rules (retire.py) for draining and
unregistered machines.

Pure: no clock, no I/O; ``now`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle.core.model import MachineRecord
from vcycle.core.sections import MachinetypeConfig, Settings
from vcycle.core.states import MachineState

S = MachineState


def _created(record: MachineRecord) -> datetime:
    return record.created_at


def _in_state(record: MachineRecord) -> datetime:
    return record.state_since


def _started(record: MachineRecord) -> datetime:
    return record.started_at or record.created_at


@dataclass(frozen=True, slots=True)
class Timeout:
    """One stuck-state timeout."""

    name: str
    states: frozenset[MachineState]  # where it applies
    key: str  # the key that sets it
    scope: str  # where that key is: "settings" or "machinetype"
    since: Callable[[MachineRecord], datetime]  # when its clock started
    words: str  # the reason, with {waited} and {key} {limit} filled in
    at_limit: bool = False  # expired at the limit itself (else only past it)

    def limit(self, settings: Settings, mt: MachinetypeConfig | None) -> int:
        """Its length in seconds (0: never), from the settings or the machine's machinetype."""
        source = settings if self.scope == "settings" else mt
        return int(getattr(source, self.key)) if source is not None else 0


REQUEST = Timeout("request", frozenset({S.REQUESTED, S.CREATE_FAILED}), "request_timeout_seconds", "settings",
                  _created, "not listed by the cloud {waited}s after the request ({key} {limit})")
DELETING = Timeout("deleting", frozenset({S.DELETING}), "deleting_timeout_seconds", "settings", _in_state,
                   "still listed {waited}s after the delete ({key} {limit})")
STARTING = Timeout("starting", frozenset({S.STARTING}), "starting_timeout_seconds", "settings", _created,
                   "still starting {waited}s after creation ({key} {limit})")
DRAINING = Timeout("draining", frozenset({S.DRAINING}), "retire_timeout_seconds", "machinetype", _in_state,
                   "still draining after {waited}s ({key} {limit})", at_limit=True)
REGISTER = Timeout("register", frozenset({S.RUNNING}), "register_timeout_seconds", "machinetype", _started,
                   "its batch daemon has not registered {waited}s after the machine started ({key} {limit})",
                   at_limit=True)

TIMEOUTS: tuple[Timeout, ...] = (REQUEST, DELETING, STARTING, DRAINING, REGISTER)


def expired(row: Timeout, record: MachineRecord, settings: Settings, mt: MachinetypeConfig | None,
            now: datetime) -> str | None:
    """Why ``record`` has been where it is too long by ``row``, or None (also when the row is off, 0)."""
    limit = row.limit(settings, mt)
    waited = now - row.since(record)
    if limit <= 0 or waited < timedelta(seconds=limit) or (waited == timedelta(seconds=limit) and not row.at_limit):
        return None
    return row.words.format(waited=int(waited.total_seconds()), key=row.key, limit=limit)
