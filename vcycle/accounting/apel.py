"""APEL accounting messages, written to the dirq queues that APEL's ssmsend reads.

Two kinds, in APEL's own message format (a header line, then ``Key: value``
lines, each record ended by ``%%``):

- ``APEL-individual-job-message: v0.3``, one record per machine that ran at
  least ``fizzle_seconds``, with the fields the old vcycle wrote (the machine
  is the job: Site, SubmitHost, LocalJobId, LocalUserId, Queue,
  GlobalUserName, FQAN, WallDuration, CpuDuration, Processors, NodeCount,
  InfrastructureDescription, InfrastructureType, StartTime, EndTime,
  MemoryReal, MemoryVirtual, ServiceLevelType, ServiceLevel) plus
  MachineName, which APEL's server needs to build its usage record;
- ``APEL-cloud-summary-message: v0.4``, one record per space, machinetype and
  month (NumberOfVMs, WallDuration, CpuDuration, EarliestStartTime,
  LatestStartTime, the VO from the FQAN, the HEPSPEC06 benchmark), sent again
  whenever a month's figures change; APEL's server keeps the last.

ServiceLevel is HEPSPEC06 per processor (``hs06_per_processor``, 1.0 when
unset), as APEL scales wall time by it. Records go to ``apel_outgoing_dir``
only for spaces with ``gocdb_sitename`` (as the old vcycle did: a guessed
site name must not reach the WLCG accounting), and always to the archive.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence

from vcycle.core.sections import MachinetypeConfig, SpaceConfig
from vcycle.core.usage import MonthUsage, Usage

JOB_HEADER = "APEL-individual-job-message: v0.3"
SUMMARY_HEADER = "APEL-cloud-summary-message: v0.4"
RECORDS_PER_MESSAGE = 500  # APEL's loader takes up to 1000 records a message; ssmsend sends one file as one


def site_name(space: SpaceConfig) -> str:
    """gocdb_sitename, else the old vcycle's guess: the space's name without its first component."""
    if space.gocdb_sitename:
        return space.gocdb_sitename
    return space.name.split(".", 1)[1] if "." in space.name else space.name


def global_user_name(space: str) -> str:
    """The old vcycle's DN for a space: its name's components as DCs, last first (/DC=org/DC=example/DC=cloud)."""
    return "".join(f"/DC={part}" for part in reversed(space.split(".")))


def vo_of(fqan: str) -> tuple[str, str | None, str | None]:
    """(VO, VOGroup, VORole) of an FQAN such as /lhcb/Role=pilot/Capability=NULL; a bare name is the VO."""
    first = fqan.split(";")[0]
    if not first.startswith("/"):
        return first, None, None
    pieces = [p for p in first.split("/") if p]
    groups = [p for p in pieces if "=" not in p]
    roles = [p for p in pieces if p.lower().startswith("role=")]
    vo = groups[0] if groups else first
    return vo, "/" + "/".join(groups) if groups else None, roles[0] if roles else None


def _lines(fields: Iterable[tuple[str, object]]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in fields if value is not None and value != "")


def job_record(u: Usage, space: SpaceConfig, mt: MachinetypeConfig, manager: str) -> str:
    """One machine's individual job record (its lines, without the ``%%``)."""
    return _lines([
        ("Site", site_name(space)),
        ("SubmitHost", f"{space.name}/vcycle-{manager}"),
        ("MachineName", u.machine),
        ("Queue", u.machinetype),
        ("LocalJobId", u.local_id),
        ("LocalUserId", u.machine),
        ("GlobalUserName", global_user_name(space.name)),
        ("FQAN", mt.accounting_fqan),
        ("WallDuration", u.wall_seconds),
        ("CpuDuration", u.cpu_seconds),
        ("Processors", u.processors),
        ("NodeCount", 1),
        ("InfrastructureDescription", "APEL-VCYCLE"),
        ("InfrastructureType", "grid"),
        ("StartTime", int(u.started_at.timestamp())),
        ("EndTime", int(u.ended_at.timestamp())),
        ("MemoryReal", u.memory_kb),
        ("MemoryVirtual", u.memory_kb),
        ("ServiceLevelType", "HEPSPEC"),
        ("ServiceLevel", f"{u.hs06_per_processor:g}"),
    ])


def summary_record(m: MonthUsage, space: SpaceConfig, mt: MachinetypeConfig | None, cloud_type: str) -> str:
    """A machinetype's month as one cloud summary record."""
    year, month = m.month.split("-")
    fqan = mt.accounting_fqan if mt is not None else None
    vo, group, role = vo_of(fqan) if fqan else (None, None, None)
    return _lines([
        ("SiteName", site_name(space)),
        ("CloudComputeService", space.name),
        ("Month", int(month)),
        ("Year", int(year)),
        ("GlobalUserName", global_user_name(space.name)),
        ("VO", vo),
        ("VOGroup", group),
        ("VORole", role),
        ("Status", "completed"),
        ("CloudType", cloud_type),
        ("ImageId", mt.root_image if mt is not None else None),
        ("EarliestStartTime", int(m.earliest_start.timestamp())),
        ("LatestStartTime", int(m.latest_start.timestamp())),
        ("WallDuration", m.wall_seconds),
        ("CpuDuration", m.cpu_seconds),
        ("BenchmarkType", "HEPSPEC"),
        ("Benchmark", f"{m.hs06_per_processor:g}"),
        ("NumberOfVMs", m.machines),
    ])


def messages(header: str, records: Sequence[str]) -> list[str]:
    """The records as APEL messages of at most RECORDS_PER_MESSAGE records each."""
    return [header + "\n" + "".join(r + "%%\n" for r in records[i:i + RECORDS_PER_MESSAGE])
            for i in range(0, len(records), RECORDS_PER_MESSAGE)]


class Queue:
    """A dirq QueueSimple directory (what ssmsend reads): each message one file, added atomically.

    The message is written to a file of our own first and then linked into the queue (dirq's ``add_path``),
    so that a full disk or a directory we may not write is an OSError here, never a half message there."""

    def __init__(self, path: str) -> None:
        self.path = path

    def add(self, message: str) -> str:
        from dirq.QueueSimple import QueueSimple  # the library ssm itself uses to read the queue

        os.makedirs(self.path, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=".vcycle-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                os.fchmod(out.fileno(), 0o644)  # ssmsend runs as its own user and reads it
                out.write(message.encode("utf-8"))
            return str(QueueSimple(self.path).add_path(temporary))
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
