"""Traces: the jobs a simulation submits, from CSV, JSON, ``condor_history -json`` or Slurm's ``sacct --json``.

Every job has an arrival (seconds after the trace's first), the cores and
memory it asks for, how long it runs, and the machinetype it is for (None:
the simulation's default). Times given as Unix seconds or ISO 8601 are
made relative to the earliest arrival.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vcycle.errors import VcycleError


class TraceError(VcycleError):
    """A trace that cannot be read; the message names the file and the record."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    arrival: float  # seconds after the trace's first arrival
    cores: int
    memory_mb: int
    duration: float  # seconds it runs once started
    machinetype: str | None = None


def read(path: str | Path) -> list[Job]:
    """The jobs of the trace at ``path``, by arrival then id. Raises TraceError."""
    where = Path(path)
    try:
        text = where.read_text()
    except OSError as exc:
        raise TraceError(f"{where}: cannot read the trace: {exc.strerror}") from None
    if where.suffix.lower() == ".csv":
        raw = [_own(row, where, n) for n, row in enumerate(csv.DictReader(text.splitlines()), start=2)]
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TraceError(f"{where}: not JSON or CSV (a .csv file is read as CSV): {exc}") from None
        raw = _json_jobs(data, where)
    if not raw:
        raise TraceError(f"{where}: the trace has no jobs")
    first = min(j.arrival for j in raw)
    jobs = [Job(j.id, j.arrival - first, j.cores, j.memory_mb, j.duration, j.machinetype) for j in raw]
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise TraceError(f"{where}: job {job.id} appears twice")
        seen.add(job.id)
    return sorted(jobs, key=lambda j: (j.arrival, j.id))


def _json_jobs(data: Any, where: Path) -> list[Job]:
    if isinstance(data, Mapping) and isinstance(data.get("jobs"), list):
        records = data["jobs"]
        if records and isinstance(records[0], Mapping) and "job_id" in records[0]:
            return [_sacct(r, where, n) for n, r in enumerate(records)]
        return [_own(r, where, n) for n, r in enumerate(records)]
    if isinstance(data, list):
        if data and isinstance(data[0], Mapping) and "QDate" in data[0]:
            return [_condor(r, where, n) for n, r in enumerate(data)]
        return [_own(r, where, n) for n, r in enumerate(data)]
    raise TraceError(f"{where}: a trace is a list of jobs, {{\"jobs\": [...]}}, condor_history -json or sacct --json")


def _number(record: Mapping[str, Any], keys: Iterable[str], where: Path, n: int, default: float | None = None,
            ) -> float:
    for key in keys:
        value = record.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, Mapping):  # sacct --json 23.02+: {"set": true, "number": N}
            value = value.get("number")
        try:
            return float(str(value))
        except (TypeError, ValueError):
            try:
                return datetime.fromisoformat(str(value)).timestamp()
            except ValueError:
                raise TraceError(f"{where}: job {n}: {key} = {value!r} is not a number or a time") from None
    if default is None:
        raise TraceError(f"{where}: job {n}: needs one of {', '.join(keys)}")
    return default


def _checked(job: Job, where: Path, n: int) -> Job:
    if job.cores < 1 or job.memory_mb < 0 or job.duration < 0:
        raise TraceError(f"{where}: job {n} ({job.id}): cores must be 1 or more, memory and duration 0 or more")
    return job


def _own(record: Mapping[str, Any], where: Path, n: int) -> Job:
    """Our own fields: id, arrival, cores, memory_mb, duration, machinetype."""
    if not isinstance(record, Mapping):
        raise TraceError(f"{where}: job {n} is not an object")
    return _checked(Job(str(record.get("id") or f"job-{n}"), _number(record, ("arrival",), where, n),
                        int(_number(record, ("cores",), where, n, 1)),
                        int(_number(record, ("memory_mb",), where, n, 2000)),
                        _number(record, ("duration",), where, n), record.get("machinetype") or None), where, n)


def _condor(record: Mapping[str, Any], where: Path, n: int) -> Job:
    """A ``condor_history -json`` ad: QDate, RequestCpus, RequestMemory, RemoteWallClockTime."""
    ident = record.get("GlobalJobId") or f"{record.get('ClusterId', n)}.{record.get('ProcId', 0)}"
    wall = _number(record, ("RemoteWallClockTime",), where, n, -1)
    if wall < 0:
        wall = _number(record, ("CompletionDate",), where, n) - _number(record, ("JobCurrentStartDate",), where, n)
    return _checked(Job(str(ident), _number(record, ("QDate",), where, n),
                        int(_number(record, ("RequestCpus",), where, n, 1)),
                        int(_number(record, ("RequestMemory",), where, n, 2000)), wall,
                        record.get("VcycleMachinetype") or None), where, n)


def _sacct(record: Mapping[str, Any], where: Path, n: int) -> Job:
    """A job of Slurm's ``sacct --json``: time.submission, time.elapsed, required.CPUs, required.memory."""
    times = record.get("time") or {}
    required = record.get("required") or {}
    memory = _number(required, ("memory", "memory_per_node"), where, n, 2000)
    return _checked(Job(str(record["job_id"]), _number(times, ("submission",), where, n),
                        int(_number(required, ("CPUs",), where, n, 1)), int(memory),
                        _number(times, ("elapsed",), where, n), record.get("partition") or None), where, n)
