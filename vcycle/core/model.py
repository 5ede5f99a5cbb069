"""Value objects shared by the pure core, the store, connectors and the web.

Everything here is a frozen dataclass: what the cloud shows (CloudMachine),
what vcycle remembers (MachineRecord with its last state change; the whole
history is in the store), what the batch system wants (Demand), what the
planner decides (Plan, CreateOrder, DeleteOrder, Decision) and what a cycle
reports (CycleReport, ReportError). Times are aware UTC datetimes.

Pure: no clock, no I/O, no randomness.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from vcycle.core.states import BIRTH, MachineState, cause

# Ownership tags, in whatever form the cloud has (metadata, tags, labels).
TAG_SPACE = "vcycle-space"
TAG_MACHINETYPE = "vcycle-machinetype"
TAG_MANAGER = "vcycle-manager"
TAG_REQUEST = "vcycle-request"


class CloudStatus(enum.Enum):
    """A cloud's view of a machine, after the connector's state map."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"  # listed, but already gone (Nova shows DELETED for a moment)
    UNKNOWN = "unknown"

    __hash__ = object.__hash__  # singletons: identity hashing, done in C


@dataclass(frozen=True, slots=True)
class OwnerTags:
    """The tags that make a cloud machine ours."""

    space: str
    machinetype: str
    manager: str
    request_id: str

    def as_dict(self) -> dict[str, str]:
        return {
            TAG_SPACE: self.space,
            TAG_MACHINETYPE: self.machinetype,
            TAG_MANAGER: self.manager,
            TAG_REQUEST: self.request_id,
        }

    @classmethod
    def from_mapping(cls, tags: Mapping[str, str]) -> OwnerTags | None:
        """The owner tags in a cloud's tag mapping, or None for a foreign machine."""
        try:
            return cls(tags[TAG_SPACE], tags[TAG_MACHINETYPE], tags[TAG_MANAGER], tags.get(TAG_REQUEST, ""))
        except KeyError:
            return None


@dataclass(frozen=True, slots=True)
class CloudMachine:
    """One machine as a cloud lists it. ``owner`` is None for machines not ours."""

    id: str
    name: str
    status: CloudStatus
    owner: OwnerTags | None
    processors: int | None = None
    created_at: datetime | None = None
    detail: str = ""  # the cloud's own state words, for reasons and status
    zone: str | None = None
    flavor: str | None = None
    ip: str | None = None
    no_capacity: str | None = None  # why the cloud could not place it (OpenStack's NoValidHost): the offering's


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One entry of a machine's history: the state it moved to, when, why (with the numbers), and the cause
    the state table gives for that edge (for the first entry: how the record was born)."""

    state: MachineState
    at: datetime
    reason: str
    cause: str = ""


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """What vcycle knows of one of its machines; ``last`` is its latest state change (the store keeps them all,
    ``Store.history``)."""

    name: str
    space: str
    machinetype: str
    state: MachineState
    processors: int
    created_at: datetime
    request_id: str
    manager: str = ""
    cloud_id: str | None = None
    zone: str | None = None
    flavor: str | None = None
    capacity: str | None = None  # the capacity type it was made as (spot, on-demand); None: the cloud's default
    hs06: float | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    shutdown_at: datetime | None = None  # MJF shutdowntime: deleted after this
    heartbeat_at: datetime | None = None
    shutdown_code: int | None = None
    shutdown_text: str | None = None
    delete_attempts: int = 0
    last_delete_at: datetime | None = None
    delete_requested: str | None = None  # an operator asked for the delete; the reason
    token_hash: str | None = None  # sha256 of the machine's token for the HTTPS endpoint
    features: str | None = None  # its Machine/Job Features, as JSON
    registered_at: datetime | None = None  # its batch daemon (HTCondor startd) first seen in the pool
    idle_since: datetime | None = None  # its batch daemon has had no work since then (None: busy or unknown)
    accounted_at: datetime | None = None  # its accounting (APEL, VacMon) was done then, once it was GONE
    made_by: str | None = None  # what made it (core/drift.py), to tell a drifted machine; None: made before that
    interruption: str | None = None  # the cloud's notice that it takes the machine back (core/interruptions.py)
    interrupted_at: datetime | None = None  # when the machine reported that notice
    last: StatusChange | None = None

    @property
    def state_since(self) -> datetime:
        return self.last.at if self.last is not None else self.created_at

    @property
    def reason(self) -> str:
        """Why it is in its state."""
        return self.last.reason if self.last is not None else ""


def new_record(
    *,
    name: str,
    space: str,
    machinetype: str,
    state: MachineState,
    processors: int,
    now: datetime,
    request_id: str,
    reason: str,
    **extra: object,
) -> MachineRecord:
    """A record born in ``state`` at ``now`` with its first history entry (its cause from states.BIRTH)."""
    return MachineRecord(
        name=name,
        space=space,
        machinetype=machinetype,
        state=state,
        processors=processors,
        created_at=now,
        request_id=request_id,
        last=StatusChange(state, now, reason, BIRTH.get(state, "")),
        **extra,  # type: ignore[arg-type]
    )


def transition(
    record: MachineRecord, target: MachineState, now: datetime, reason: str, **changes: object
) -> MachineRecord:
    """The record moved to ``target`` (its ``last`` the new entry); raises InvalidTransition if the table
    forbids it."""
    entry = StatusChange(target, now, reason, cause(record.state, target))
    return dataclasses.replace(record, state=target, last=entry, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a machine last told vcycle: its heartbeat time and any shutdown message."""

    machine: str
    at: datetime | None = None
    shutdown_message: str | None = None
    shutdown_message_at: datetime | None = None
    address: str | None = None  # where its last report came from (heartbeat lists give it to other machines)
    detail: str | None = None  # JSON of its last heartbeat body (load, running jobs, text), if it sent one
    interruption: str | None = None  # the cloud's interruption notice it reported (core/interruptions.py)
    interruption_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """The last abort of a machinetype: no creation for backoff_seconds after it, doubled for each of
    ``failures`` in a row after the first (core/rules.py: ``hold_seconds``)."""

    machinetype: str
    last_abort_at: datetime
    reason: str
    failures: int = 1  # aborts in a row, each after the hold of the one before had ended


SPOT = "spot"
ON_DEMAND = "on-demand"
CAPACITY_TYPES = (SPOT, ON_DEMAND)


@dataclass(frozen=True, slots=True)
class Offering:
    """Where a machine is made: a flavor (instance type), a zone and a capacity type (spot, on-demand); None
    in any of them is the cloud's (or the connector's own) choice.

    Its ``key`` is how the store and status name it: the flavor alone, as before offerings had zones and
    capacity types, then ``@ZONE`` and ``/CAPACITY`` when named (``m5.large@eu-west-1a/spot``).
    """

    flavor: str | None = None
    zone: str | None = None
    capacity: str | None = None

    @property
    def key(self) -> str:
        return ((self.flavor or "") + (f"@{self.zone}" if self.zone else "")
                + (f"/{self.capacity}" if self.capacity else ""))

    @classmethod
    def parse(cls, key: str) -> Offering:
        """The offering a ``key`` names (a stored cooldown's)."""
        rest, _, capacity = key.rpartition("/")
        if capacity not in CAPACITY_TYPES:  # a flavor name with a slash in it
            rest, capacity = key, ""
        flavor, at, zone = rest.rpartition("@")
        if not at:
            flavor, zone = rest, ""
        return cls(flavor or None, zone or None, capacity or None)

    def covers(self, other: Offering) -> bool:
        """Whether a hold on this offering holds ``other`` too: each part equal, or left to the cloud on either
        side (a flavor cooled in a zone the cloud chose holds that flavor in every zone vcycle does not name)."""
        return all(mine is None or theirs is None or mine == theirs
                   for mine, theirs in ((self.flavor, other.flavor), (self.zone, other.zone),
                                        (self.capacity, other.capacity)))

    def __str__(self) -> str:
        return self.key or "the offering"


def most_specific(table: Iterable[tuple[Offering, float]], offering: Offering) -> float | None:
    """The value of the most specific pattern of ``table`` that matches ``offering`` (a part None in a pattern
    matches any; the first listed among equals), or None: how offering_prices and the simulator's rates read."""
    best: tuple[int, float] | None = None
    for pattern, value in table:
        parts = ((pattern.flavor, offering.flavor), (pattern.zone, offering.zone),
                 (pattern.capacity, offering.capacity))
        if all(mine is None or mine == theirs for mine, theirs in parts):
            named = sum(mine is not None for mine, _ in parts)
            if best is None or named > best[0]:
                best = (named, value)
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Cooldown:
    """The last time an offering of a machinetype had no capacity: nothing is made on it for its
    machinetype's offering_cooldown_seconds after ``since``, doubled for each of ``failures`` after the first."""

    machinetype: str
    offering: str  # the Offering's key ("" where vcycle names none: the cloud chooses)
    since: datetime
    reason: str
    failures: int = 1  # times in a row it had no capacity, each after the cooldown before had ended


@dataclass(frozen=True, slots=True)
class QuotaHold:
    """The cloud refused a create of ``processors`` for its quota while the space held ``held`` processors: no
    create of that size or more until a listing shows fewer held."""

    processors: int
    held: int
    since: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class LaunchOutcome:
    """One machine's launch outcome (core/health.py): it reached work (``ok``) or failed, when, and why."""

    machinetype: str
    machine: str
    at: datetime
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class JobShape:
    """``count`` idle jobs that each ask for these resources (HTCondor's RequestCpus, RequestMemory in MB,
    RequestDisk in KiB)."""

    processors: int
    memory_mb: int
    disk_kb: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class Demand:
    """Work waiting for a machinetype. ``known`` False means the source failed.

    ``shapes``, when the source knows them, are the idle jobs by size: the planner packs them into machines
    of the machinetype's size instead of dividing ``idle_jobs`` by jobs_per_machine.
    """

    idle_jobs: int = 0
    running_jobs: int = 0
    known: bool = True
    reason: str = ""
    shapes: tuple[JobShape, ...] | None = None
    # when the source asks for machines, not jobs (a source that hands out named machines: each waiting
    # pilot is one machine), the machines of those pilots still starting included
    machines: int | None = None

    @classmethod
    def unknown(cls, reason: str) -> Demand:
        return cls(known=False, reason=reason)


@dataclass(frozen=True, slots=True)
class PilotRequest:
    """A pilot a pilot factory handed in (DIRAC's SiteDirector, through the Vcycle CE), waiting for vcycle to
    create the one machine that runs it.

    ``name`` is the machine's name, chosen when the pilot was handed in, so that the factory's reference
    names the machine from the start. ``stamp`` is the factory's own id of the pilot. ``wrapper`` is the
    pilot's script, which carries a proxy: a secret, kept only until the machine's user-data is rendered and
    never shown.
    """

    name: str
    space: str
    machinetype: str
    stamp: str
    requested_at: datetime
    wrapper: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Spend:
    """The month's money as the store tells it (core/spend.py): what the space and the site spent since the month
    began (UTC), and what the other spaces' machines burn an hour now."""

    space_to_date: float
    site_to_date: float
    site_burn_elsewhere: float = 0.0
    site_spaces: int = 1  # the spaces sharing the site's budget, each given its part of what is left


@dataclass(frozen=True, slots=True)
class SpaceSnapshot:
    """Everything the planner needs to know about one space at one moment."""

    space: str
    records: tuple[MachineRecord, ...]
    foreign_processors: int = 0  # machines in the space that are not ours
    backoffs: Mapping[str, Backoff] = field(default_factory=dict)
    quota_processors: int | None = None  # the cloud's own limit, if it tells
    flavors: Mapping[str, int] | None = None  # name -> vcpus of the flavors the cloud offers; None: it cannot tell
    draining: frozenset[str] = frozenset()  # machinetypes drained by an operator; "*" = all
    # machine name -> whether its batch daemon has work, for the machines registered in the batch system;
    # None when the space has no batch system to ask, or it did not answer
    registered: Mapping[str, bool] | None = None
    unrenderable: Mapping[str, str] = field(default_factory=dict)  # machinetype -> why its user-data does not render
    cooldowns: Mapping[tuple[str, str], Cooldown] = field(default_factory=dict)  # (machinetype, offering) -> last
    # machinetype -> its idle jobs in the last cycles, oldest first (from the time series), for retire_wait_cycles
    recent_idle: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # machinetype -> its last launch outcomes, newest last (core/health.py)
    launches: Mapping[str, tuple[LaunchOutcome, ...]] = field(default_factory=dict)
    quota_hold: QuotaHold | None = None  # the last create refused for the space's quota, while it holds
    spend: Spend | None = None  # the money spent this month, where a cap or budget asks (core/spend.py)
    prices: Mapping[str, float] = field(default_factory=dict)  # offering key -> the cloud's price now (EC2 spot)
    counts: object = None  # core/counts.Counts of these very records, kept by the sync; None: the planner counts


class Action(enum.Enum):
    CREATE = "create"
    DELETE = "delete"
    DRAIN = "drain"  # the machine's batch daemon is asked to finish its work and take no more
    HOLD = "hold"  # a create that was considered and refused


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing the planner decided: the rule that decided it (a code from rules.RULES), and why, with the
    numbers."""

    action: Action
    space: str
    machinetype: str
    reason: str
    machine: str = ""
    rule: str = ""


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """Create one machine of a machinetype. Name and request id come from the executor."""

    space: str
    machinetype: str
    processors: int
    flavor: str | None
    shutdown_at: datetime
    hs06: float | None
    reason: str
    pilot: PilotRequest | None = None  # the pilot the machine runs, handed in by a pilot factory (set by the executor)
    fallbacks: tuple[Offering, ...] = ()  # offerings of the same size to try, in order, when this has no capacity
    zone: str | None = None  # the zone of its offering (None: the cloud's or the connector's choice)
    capacity: str | None = None  # the capacity type of its offering (None: the connector's default)

    @property
    def offering(self) -> Offering:
        return Offering(self.flavor, self.zone, self.capacity)


@dataclass(frozen=True, slots=True)
class DeleteOrder:
    """Delete one machine, with the shutdown message vcycle writes for it."""

    space: str
    machinetype: str
    machine: str
    cloud_id: str | None
    code: int | None
    message: str
    reason: str
    abort: bool = False  # it ends the machine for a fault of its own (a deadline passed): the machinetype backs off


@dataclass(frozen=True, slots=True)
class DrainOrder:
    """Ask one machine's batch daemon to drain (HTCondor: DaemonsOffPeaceful); it is deleted once gone."""

    space: str
    machinetype: str
    machine: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What one cycle should do in one space."""

    space: str
    now: datetime
    creates: tuple[CreateOrder, ...]
    deletes: tuple[DeleteOrder, ...]
    decisions: tuple[Decision, ...]
    drains: tuple[DrainOrder, ...] = ()


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a connector needs to create one machine."""

    name: str
    request_id: str
    space: str
    machinetype: str
    manager: str
    processors: int
    flavor: str | None
    zone: str | None
    image: str | None
    user_data: bytes
    shutdown_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    token: str | None = field(default=None, repr=False)  # the machine's endpoint token: never a tag or metadata
    capacity: str | None = None  # spot or on-demand; None: the connector's own default (its machinetype keys)

    @property
    def offering(self) -> Offering:
        return Offering(self.flavor, self.zone, self.capacity)

    @property
    def owner(self) -> OwnerTags:
        return OwnerTags(self.space, self.machinetype, self.manager, self.request_id)


@dataclass(frozen=True, slots=True)
class ReportError:
    """One thing that went wrong in a cycle: its kind (a word from ERROR_KINDS), where, and what was said."""

    kind: str
    space: str
    message: str
    machinetype: str = ""
    machine: str = ""

    def __str__(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in (("space", self.space), ("machinetype", self.machinetype),
                                                  ("machine", self.machine)) if v)
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "space": self.space, "machinetype": self.machinetype, "machine": self.machine,
                "message": self.message}


# The connector calls a cycle report counts and times (``api_OP_calls``, ``api_OP_s``).
API_OPERATIONS = ("list_machines", "create_machine", "delete_machine", "capacity", "flavors")

# The kinds of ReportError. A create refused takes its connector error's kind: create_refused_quota, ...
ERROR_KINDS = (
    "create_refused_quota", "create_refused_rejected", "create_not_confirmed", "create_bug", "delete_failed",
    "delete_bug", "delete_unknown_id", "drain_failed", "user_data", "store", "connector_unavailable",
    "space_skipped", "space_bug", "worker_died",
)


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did in one space: counts, decisions, errors and timings."""

    space: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    counts: Mapping[str, int] = field(default_factory=dict)
    decisions: tuple[Decision, ...] = ()
    errors: tuple[ReportError, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # from the connector: things an admin must act on soon (an expiring credential)
    series: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # the plots' point (core/series.py)
    spend: Mapping[str, object] | None = None  # the month's money (core/spend.py Figures), where prices are named

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary (decisions and errors as dicts)."""
        return {
            **({"spend": dict(self.spend)} if self.spend is not None else {}),
            "counts": dict(self.counts),
            "decisions": [
                {"action": d.action.value, "machinetype": d.machinetype, "machine": d.machine, "rule": d.rule,
                 "reason": d.reason}
                for d in self.decisions
            ],
            "errors": [e.as_dict() for e in self.errors],
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
        }
