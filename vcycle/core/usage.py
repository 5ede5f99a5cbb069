"""What one machine used, from its record: the figures APEL and VacMon report.

A machine is accounted once it is GONE. It ran from ``started_at`` (first
seen running) to ``stopped_at`` (first seen stopped, or gone); when its
heartbeats stopped well before that (vcycle was down, or saw the stop late),
the end is its last heartbeat plus one heartbeat interval, the latest time
the heartbeats vouch for. A machine that never ran, or ran less than its
machinetype's ``fizzle_seconds``, has no usage (the old vcycle's APEL
cut-off). CPU time is the wall time, as the old vcycle reported it: nothing
in the cloud's listing tells more. Memory is the machine's MJF
``max_rss_bytes`` (``mb_per_processor`` for each processor), in KiB.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle.core.model import MachineRecord
from vcycle.core.sections import MachinetypeConfig


@dataclass(frozen=True, slots=True)
class Usage:
    """One machine's run, in whole seconds."""

    space: str
    machinetype: str
    machine: str
    local_id: str  # the cloud's id of it (the old vcycle's LocalJobId), else its name
    processors: int
    started_at: datetime
    ended_at: datetime
    wall_seconds: int
    cpu_seconds: int
    hs06_per_processor: float  # 1.0 when the machinetype gives none (APEL's default scaling)
    memory_kb: int  # its MJF max_rss_bytes / 1024

    @property
    def month(self) -> str:
        """YYYY-MM of the month it ended in (UTC): where its usage is summed."""
        return f"{self.ended_at.year:04d}-{self.ended_at.month:02d}"


def end_of(record: MachineRecord, mt: MachinetypeConfig | None) -> datetime | None:
    """When the machine stopped working, as far as its record and heartbeats tell; None if it never ran."""
    if record.started_at is None or record.stopped_at is None:
        return None
    end = record.stopped_at
    if mt is not None and mt.heartbeat_seconds and record.heartbeat_at is not None:
        vouched = record.heartbeat_at + timedelta(seconds=mt.heartbeat_seconds)
        end = min(end, max(vouched, record.started_at))
    return max(end, record.started_at)


def usage(record: MachineRecord, mt: MachinetypeConfig | None) -> Usage | None:
    """The machine's usage, or None if it has none to report (never ran, fizzled, or its machinetype is gone:
    then no fizzle cut-off is known and nothing is claimed)."""
    if mt is None:
        return None
    end = end_of(record, mt)
    if end is None or record.started_at is None:
        return None
    wall = int((end - record.started_at).total_seconds())
    if wall < mt.fizzle_seconds:
        return None
    per_processor = record.hs06 / record.processors if record.hs06 is not None and record.processors else None
    return Usage(space=record.space, machinetype=record.machinetype, machine=record.name,
                 local_id=record.cloud_id or record.name, processors=record.processors,
                 started_at=record.started_at, ended_at=end, wall_seconds=wall, cpu_seconds=wall,
                 hs06_per_processor=per_processor if per_processor is not None else 1.0,
                 memory_kb=mt.mb_per_processor * 1024 * record.processors)


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """What a machinetype's machines that ended in one month used (summed once per machine, by the store)."""

    space: str
    machinetype: str
    month: str  # YYYY-MM
    machines: int
    wall_seconds: int
    cpu_seconds: int
    processors: int
    hs06_per_processor: float  # of the last machine added
    earliest_start: datetime
    latest_start: datetime


def add(month: MonthUsage | None, u: Usage) -> MonthUsage:
    """``month`` with one more machine's usage (a new month from it if None)."""
    if month is None:
        return MonthUsage(u.space, u.machinetype, u.month, 1, u.wall_seconds, u.cpu_seconds, u.processors,
                          u.hs06_per_processor, u.started_at, u.started_at)
    return MonthUsage(month.space, month.machinetype, month.month, month.machines + 1,
                      month.wall_seconds + u.wall_seconds, month.cpu_seconds + u.cpu_seconds,
                      month.processors + u.processors, u.hs06_per_processor,
                      min(month.earliest_start, u.started_at), max(month.latest_start, u.started_at))
