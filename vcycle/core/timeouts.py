"""Every deadline and stuck-state timeout, one row each: how long a machine may stay where it is, and what follows.

A row names the state it guards, the key that sets its length (of
``[settings]`` or of the machine's machinetype; 0 there means never), when
its clock started, and the words of its reason. A row that ends a machine
also carries the shutdown code vcycle writes for it and whether that counts
as an abort (the machinetype backs off). ``expired(row, ...)`` is the one
check: sync asks it for requests and deletes, the planner for machines that
never started or never sent a heartbeat, the batch rules (retire.py) for
draining, unregistered and workless machines.

The machine's deadlines, from creation to work::

    created --launch_timeout_seconds--> running --register_timeout_seconds--> registered (batch daemon or
    first heartbeat) --first_job_timeout_seconds--> its first job (where the batch system tells)

Pure: no clock, no I/O; ``now`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle.core.model import MachineRecord
from vcycle.core.rules import DRAINED, FAILED_TO_START, HEARTBEAT_MISSING, NO_JOB, NOT_REGISTERED
from vcycle.core.sections import MachinetypeConfig, Settings
from vcycle.core.states import MachineState

S = MachineState


def _created(record: MachineRecord) -> datetime:
    return record.created_at


def _in_state(record: MachineRecord) -> datetime:
    return record.state_since


def _started(record: MachineRecord) -> datetime:
    return record.started_at or record.created_at


def _registered(record: MachineRecord) -> datetime:
    return record.registered_at or record.started_at or record.created_at


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
    code: tuple[int, str] | None = None  # the shutdown message of a machine it ends
    abort: bool = False  # a machine it ends counts as an abort: the machinetype backs off
    fallback: str = ""  # a [settings] key that sets it where the machinetype does not (an older key)
    default: int = 0  # where neither does

    def limit(self, settings: Settings, mt: MachinetypeConfig | None) -> int:
        """Its length in seconds (0: never), from the settings or the machine's machinetype."""
        source = settings if self.scope == "settings" else mt
        value = getattr(source, self.key) if source is not None else None
        if value is None and self.fallback:
            value = getattr(settings, self.fallback)
        return int(value) if value is not None else self.default


REQUEST = Timeout("request", frozenset({S.REQUESTED, S.CREATE_FAILED}), "request_timeout_seconds", "settings",
                  _created, "not listed by the cloud {waited}s after the request ({key} {limit})")
DELETING = Timeout("deleting", frozenset({S.DELETING}), "deleting_timeout_seconds", "settings", _in_state,
                   "still listed {waited}s after the delete ({key} {limit})")
LAUNCH = Timeout("launch", frozenset({S.STARTING}), "launch_timeout_seconds", "machinetype", _created,
                 "still starting {waited}s after creation ({key} {limit})", code=FAILED_TO_START,
                 abort=True, fallback="starting_timeout_seconds", default=300)
DRAINING = Timeout("draining", frozenset({S.DRAINING}), "retire_timeout_seconds", "machinetype", _in_state,
                   "still draining after {waited}s ({key} {limit})", at_limit=True,
                   code=DRAINED)
REGISTER = Timeout("register", frozenset({S.RUNNING}), "register_timeout_seconds", "machinetype", _started,
                   "its batch daemon has not registered {waited}s after the machine started ({key} {limit})",
                   at_limit=True, code=NOT_REGISTERED, abort=True)
FIRST_HEARTBEAT = Timeout("first_heartbeat", frozenset({S.RUNNING}), "register_timeout_seconds", "machinetype",
                          _started, "no heartbeat {waited}s after the machine started ({key} {limit})",
                          at_limit=True, code=HEARTBEAT_MISSING, abort=True)
FIRST_JOB = Timeout("first_job", frozenset({S.RUNNING}), "first_job_timeout_seconds", "machinetype", _registered,
                    "its batch daemon has run no job {waited}s after it registered, while idle jobs wait "
                    "({key} {limit})", at_limit=True, code=NO_JOB, abort=True)

TIMEOUTS: tuple[Timeout, ...] = (REQUEST, DELETING, LAUNCH, DRAINING, REGISTER, FIRST_HEARTBEAT, FIRST_JOB)


def expired(row: Timeout, record: MachineRecord, settings: Settings, mt: MachinetypeConfig | None,
            now: datetime) -> str | None:
    """Why ``record`` has been where it is too long by ``row``, or None (also when the row is off, 0)."""
    limit = row.limit(settings, mt)
    waited = now - row.since(record)
    if limit <= 0 or waited < timedelta(seconds=limit) or (waited == timedelta(seconds=limit) and not row.at_limit):
        return None
    return row.words.format(waited=int(waited.total_seconds()), key=row.key, limit=limit)
