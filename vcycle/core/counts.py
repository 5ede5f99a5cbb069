"""Counts of a space's running machines, kept up to date by changes, and when each is next due a look.

The planner's first pass (planner._deletions) counts every running machine
into its machinetype's tally and asks whether one must go: past its
shutdown time, an operator's delete, a heartbeat gone stale or never come.
For a running machine nothing changes that answer but the machine's record
and the clock, and the clock only at known times: its shutdown time, its
last heartbeat plus heartbeat_seconds, its start plus fizzle_seconds or plus
the first-heartbeat limit. ``Counts`` keeps, for the running machines of
known machinetypes, the tallies (machines, processors, the hs06 they weigh,
their start times in order for fizzle_seconds) and an ordered index (a heap)
of the time each is next due a look. Changed records replace their old
selves (``replace``); a cycle looks at the machines whose time has come and
at the machines that do not run (few, and each may be due at any cycle).

A due time is never later than the moment the planner's fast path would
first fail for the machine: a machine looked at early passes the fast path
and stays due until its record changes. tests/unit/test_delta.py checks the
plans made with and without Counts against each other.

Pure: no clock, no I/O; ``now`` is a parameter.
"""

from __future__ import annotations

import bisect
import collections
import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import TypeVar

from vcycle.core import timeouts
from vcycle.core.model import MachineRecord
from vcycle.core.sections import MachinetypeConfig, Settings, SpaceConfig
from vcycle.core.states import MachineState

RUNNING = MachineState.RUNNING
MACHINETYPE, STATE, MADE_BY = attrgetter("machinetype"), attrgetter("state"), attrgetter("made_by")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """A machinetype's times that decide when a running machine of it is next due a look."""

    heartbeat: bool  # it has a heartbeat_file: its heartbeats are watched
    heartbeat_seconds: timedelta | None  # None: any heartbeat is fresh
    fizzle: timedelta
    first: timedelta | None  # the first-heartbeat limit; None: none

    @classmethod
    def of(cls, mt: MachinetypeConfig, settings: Settings) -> Limits:
        first = timeouts.FIRST_HEARTBEAT.limit(settings, mt)
        return cls(mt.heartbeat_file is not None,
                   timedelta(seconds=mt.heartbeat_seconds) if mt.heartbeat_seconds > 0 else None,
                   timedelta(seconds=mt.fizzle_seconds), timedelta(seconds=first) if first > 0 else None)

    def due(self, record: MachineRecord) -> datetime | None:
        """When the running ``record`` is next due a look (None: only when it changes)."""
        if record.delete_requested:
            return datetime.min.replace(tzinfo=record.created_at.tzinfo)
        at = record.shutdown_at
        if self.heartbeat:
            started = record.started_at or record.created_at
            beat = record.heartbeat_at
            young = started + self.fizzle  # the fast path forgives a young machine its missing heartbeat
            if beat is None and self.first is not None:
                young = min(young, started + self.first)
            if beat is None:
                stale: datetime | None = young
            elif self.heartbeat_seconds is not None:
                stale = max(beat + self.heartbeat_seconds, young)
            else:
                stale = None  # any heartbeat is fresh
            if stale is not None:
                at = stale if at is None else min(at, stale)
        return at


class ExactSum:
    """An exact sum of ints and floats (each a ratio whose denominator is a power of two), in integers: what
    machines weigh, the same whatever order they are added and taken away in; ``value`` rounds it once."""

    __slots__ = ("shift", "total")

    def __init__(self) -> None:
        self.total = 0  # the sum times 2 ** shift
        self.shift = 0

    def add(self, value: float, sign: int = 1) -> None:
        if type(value) is int:  # a machine's processors, where it names no hs06: a whole number
            self.total += sign * (value << self.shift)
            return
        numerator, denominator = value.as_integer_ratio()
        shift = denominator.bit_length() - 1
        if shift > self.shift:
            self.total <<= shift - self.shift
            self.shift = shift
        self.total += sign * (numerator << (self.shift - shift))

    def copy(self) -> ExactSum:
        other = ExactSum()
        other.total, other.shift = self.total, self.shift
        return other

    def value(self) -> float:
        """The sum, correctly rounded (as math.fsum rounds the same values)."""
        return self.total / (1 << self.shift)

    def __bool__(self) -> bool:
        return self.total != 0


class Kind:
    """The running machines of one machinetype: how many, their processors and hs06, their starts in order."""

    __slots__ = ("hs06", "machines", "processors", "starts")

    def __init__(self) -> None:
        self.machines = 0
        self.processors = 0
        self.hs06 = ExactSum()  # exact, so that the order of changes cannot change the sum
        self.starts: list[datetime] = []  # started_at (or created_at), in order

    def count(self, record: MachineRecord, sign: int, bulk: bool = False) -> None:
        """Count ``record`` in (``sign`` 1) or out (-1); ``bulk``: its start is put last, to be sorted later."""
        self.machines += sign
        self.processors += sign * record.processors
        self.hs06.add(record.hs06 or record.processors, sign)
        started = record.started_at or record.created_at
        if sign > 0 and bulk:
            self.starts.append(started)
        elif sign > 0:
            bisect.insort(self.starts, started)
        else:
            del self.starts[bisect.bisect_left(self.starts, started)]

    def young(self, cutoff: datetime) -> int:
        """How many started after ``cutoff``."""
        return len(self.starts) - bisect.bisect_right(self.starts, cutoff)


class Counts:
    """The counted running machines of one space and the time each is next due a look; the other records' names.

    ``records``: the tuple the counts stand for (the planner uses them for that very tuple only)."""

    __slots__ = ("due", "kinds", "limits", "made", "noticed", "others", "overdue", "records", "running",
                 "settings", "space", "states")

    def __init__(self, space: SpaceConfig, settings: Settings, records: tuple[MachineRecord, ...]) -> None:
        self.space = space
        self.settings = settings
        self.limits = {name: Limits.of(mt, settings) for name, mt in space.machinetypes.items()}
        self.kinds = {name: Kind() for name in space.machinetypes}
        self.running: dict[str, datetime | None] = {}  # name of a counted machine -> when it is due a look
        self.others: set[str] = set()  # records looked at every cycle: not running, or of no known machinetype
        self.due: list[tuple[datetime, str]] = []  # a heap; entries whose record changed since are skipped
        self.overdue: set[str] = set()  # counted machines whose time came: looked at until their record changes
        self.records = records
        # of every record: how many of each (machinetype, state) and (machinetype, made_by), and the names of those
        # with an interruption notice
        self.states = collections.Counter(zip(map(MACHINETYPE, records), map(STATE, records), strict=True))
        self.made = collections.Counter(zip(map(MACHINETYPE, records), map(MADE_BY, records), strict=True))
        self.noticed = {r.name for r in records if r.interruption is not None or r.interrupted_at is not None}
        limits, kinds, running, due = self.limits, self.kinds, self.running, self.due
        for record in records:  # _count_in of each, in bulk: the starts sorted and the heap made after the last
            name = record.name
            found = limits.get(record.machinetype)
            if record.state is not RUNNING or found is None:
                self.others.add(name)
                continue
            at = running[name] = found.due(record)
            kinds[record.machinetype].count(record, +1, bulk=True)
            if at is not None:
                due.append((at, name))
        for kind in kinds.values():
            kind.starts.sort()
        heapq.heapify(due)

    def replace(self, old: MachineRecord | None, new: MachineRecord | None) -> None:
        """``old`` (as counted before, or None) becomes ``new`` (None: no longer among the records)."""
        if old is not None:
            _take(self.states, (old.machinetype, old.state))
            _take(self.made, (old.machinetype, old.made_by))
            self.noticed.discard(old.name)
            if old.name in self.running:  # ``old`` is the record counted
                del self.running[old.name]
                self.kinds[old.machinetype].count(old, -1)
                self.overdue.discard(old.name)
            self.others.discard(old.name)
        if new is None:
            return
        self.states[(new.machinetype, new.state)] += 1
        self.made[(new.machinetype, new.made_by)] += 1
        if new.interruption is not None or new.interrupted_at is not None:
            self.noticed.add(new.name)
        self._count_in(new)

    def _count_in(self, record: MachineRecord) -> None:
        """Count ``record`` in: a running machine of a known machinetype into its kind and the deadline index, any
        other among those looked at every cycle."""
        limits = self.limits.get(record.machinetype)
        if record.state is not RUNNING or limits is None:
            self.others.add(record.name)
            return
        at = limits.due(record)
        self.running[record.name] = at
        self.kinds[record.machinetype].count(record, +1)
        if at is None:
            return
        heapq.heappush(self.due, (at, record.name))
        if len(self.due) > 4 * len(self.running) + 64:  # mostly entries of records changed since: made anew
            self.due = [(when, name) for name, when in self.running.items() if when is not None]
            heapq.heapify(self.due)

    @property
    def held(self) -> int:
        """The processors of the counted machines."""
        return sum(kind.processors for kind in self.kinds.values())

    def looks(self, now: datetime) -> set[str]:
        """The names of the records to look at ``now``: the counted machines due by now, and all the others."""
        due = self.due
        while due and due[0][0] <= now:
            at, name = heapq.heappop(due)
            if name in self.running and self.running[name] == at:  # not an entry of a record changed since
                self.overdue.add(name)
        return self.overdue | self.others

    def stand_for(self, records: tuple[MachineRecord, ...], space: SpaceConfig, settings: Settings) -> bool:
        """Whether these counts are of ``records``, under this configuration."""
        return records is self.records and space is self.space and settings is self.settings


def _take(counter: collections.Counter[T], key: T) -> None:
    """One fewer of ``key``; none left, no key."""
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]


def replace_all(counts: Counts, before: dict[str, MachineRecord], after: dict[str, MachineRecord],
                names: Iterable[str], records: tuple[MachineRecord, ...]) -> None:
    """Bring ``counts`` from the records ``before`` to those ``after`` (by name), for the ``names`` that changed;
    ``records``: the tuple they now stand for."""
    for name in names:
        old, new = before.get(name), after.get(name)
        if old is not new:
            counts.replace(old, new)
    counts.records = records
