"""``[demand NAME] type = htcondor``: idle jobs in an HTCondor pool, by shape, per machinetype.

Each machinetype naming the source has its own query: idle jobs (``JobStatus
== 1``; held jobs never count) idle for at least ``min_idle_seconds``,
matching the section's ``constraint`` and the machinetype's
``htcondor_constraint``, asked of every schedd the collector knows (or the
named ones). The jobs' RequestCpus, RequestMemory and RequestDisk become
``JobShape`` counts, which the planner packs into machines of the
machinetype's size.

Two ways to ask, the same answers: the official bindings (``htcondor2``,
``pip install vcycle[htcondor]``), or ``condor_q`` and ``condor_status``
with ``-json`` where only HTCondor's tools are installed. Any failure (an
unreachable collector or schedd, a bad constraint, a missing tool) is a
DemandError: the demand is unknown, nothing is created for those
machinetypes, and the cycle says why in one line.
"""

from __future__ import annotations

import collections
import enum
import importlib
import json
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from vcycle.clock import utc_now
from vcycle.core.model import Demand, JobShape
from vcycle.core.options import choice, key, options_of, seconds, text, words
from vcycle.core.sections import DemandConfig, MachinetypeConfig
from vcycle.demand.base import DemandPlugin, SourceContext
from vcycle.errors import DemandError


@dataclass(frozen=True, slots=True, kw_only=True)
class HTCondorSection:
    """The keys of a ``type = htcondor`` section."""

    collector: str | None = key(text, None, "the pool's collector, HOST[:PORT]; default HTCondor's COLLECTOR_HOST")
    schedds: tuple[str, ...] = key(words, (), "schedd names to ask; default every schedd the collector knows")
    constraint: str | None = key(text, None, "a ClassAd expression every counted job must match")
    min_idle_seconds: int = key(seconds(0), 0, "jobs idle for less than this are not counted yet")
    method: str = key(choice("auto", "bindings", "commands"), "auto",
                      "the htcondor2 bindings, or condor_q and condor_status -json; auto = bindings if installed")
    timeout_seconds: int = key(seconds(1), 60, "how long one query may take")


@dataclass(frozen=True, slots=True, kw_only=True)
class HTCondorMachinetype:
    """The keys a ``type = htcondor`` source adds to the machinetypes naming it."""

    htcondor_constraint: str | None = key(text, None,
                                          "ClassAd expression selecting the HTCondor jobs this machinetype serves")

IDLE = 1
JOB_ATTRIBUTES = ("ClusterId", "ProcId", "JobStatus", "EnteredCurrentStatus", "RequestCpus", "RequestMemory",
                  "RequestDisk")
# Asked for too: what HTCondor's default RequestMemory and RequestDisk expressions refer to, so that they
# evaluate here as in the schedd.
PROJECTION = (*JOB_ATTRIBUTES, "MemoryUsage", "ImageSize", "ResidentSetSize", "DiskUsage", "TransferInputSizeMB")


def job_constraint(pool_constraint: str | None, machinetype_constraint: str | None, now: datetime,
                   min_idle_seconds: int) -> str:
    """The ClassAd expression selecting the idle jobs one machinetype counts."""
    parts = [f"JobStatus == {IDLE}"]
    if min_idle_seconds > 0:
        parts.append(f"EnteredCurrentStatus <= {int(now.timestamp()) - min_idle_seconds}")
    parts += [f"({c})" for c in (pool_constraint, machinetype_constraint) if c and c.strip()]
    return " && ".join(parts)


def _whole(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default  # undefined, an unevaluated expression or junk: the job is counted at the default
    return max(int(value), 0)


def shapes(jobs: Iterable[Mapping[str, Any]]) -> tuple[JobShape, ...]:
    """Jobs' evaluated requests grouped into shapes (RequestCpus 1, memory and disk 0 where unknown)."""
    counts: collections.Counter[tuple[int, int, int]] = collections.Counter()
    for job in jobs:
        counts[(_whole(job.get("RequestCpus"), 1), _whole(job.get("RequestMemory"), 0),
                _whole(job.get("RequestDisk"), 0))] += 1
    return tuple(JobShape(c, m, d, n) for (c, m, d), n in sorted(counts.items()))


# What the startds of vcycle's machines advertise (the htcondor-startd template sets VCYCLE_MACHINE and
# VCYCLE_SPACE in STARTD_ATTRS), asked of the collector for every slot.
STARTD_ATTRIBUTES = ("Name", "Machine", "VCYCLE_MACHINE", "VCYCLE_SPACE", "State", "SlotType")


class Pool(Protocol):
    """How the pool is asked: idle jobs, the startds of a space's machines, and a peaceful drain."""

    def idle_jobs(self, constraint: str) -> list[dict[str, Any]]: ...

    def startds(self, space: str) -> list[dict[str, Any]]: ...

    def drain(self, host: str) -> None: ...


def _space_constraint(space: str) -> str:
    return f'VCYCLE_SPACE == "{space}"'  # space names are a-z 0-9 . _ -: nothing to escape


# --- the bindings ---------------------------------------------------------------------------

def _evaluated(ad: Any, key: str) -> Any:
    try:
        value = ad.eval(key)
    except KeyError:
        return None
    if isinstance(value, enum.Enum) or not isinstance(value, int | float | str):
        return None  # classad2's Value.Undefined and Value.Error (an IntEnum: not a number)
    return value


class BindingsPool:
    """The pool through the ``htcondor2`` bindings (or a module offering the same calls, for tests)."""

    def __init__(self, collector: str | None, schedds: Sequence[str] = (), module: Any = None) -> None:
        self.collector = collector
        self.schedds = tuple(schedds)
        self.htcondor = module if module is not None else importlib.import_module("htcondor2")

    def schedd_ads(self) -> list[Any]:
        where = f"collector {self.collector or '(COLLECTOR_HOST)'}"
        try:
            collector = self.htcondor.Collector(self.collector)
            if self.schedds:
                return [collector.locate(self.htcondor.DaemonType.Schedd, name) for name in self.schedds]
            return list(collector.locateAll(self.htcondor.DaemonType.Schedd))
        except (self.htcondor.HTCondorException, OSError, RuntimeError, ValueError) as exc:
            raise DemandError(f"{where}: {exc}") from exc

    def idle_jobs(self, constraint: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        for ad in self.schedd_ads():
            name = ad.get("Name", "?")
            try:
                found = self.htcondor.Schedd(ad).query(constraint=constraint, projection=list(PROJECTION))
            except (self.htcondor.HTCondorException, OSError, RuntimeError, ValueError) as exc:
                raise DemandError(f"schedd {name}: {exc}") from exc
            jobs.extend({key: _evaluated(job, key) for key in JOB_ATTRIBUTES} for job in found)
        return jobs

    def startds(self, space: str) -> list[dict[str, Any]]:
        try:
            ads = self.htcondor.Collector(self.collector).query(
                self.htcondor.AdType.Startd, constraint=_space_constraint(space), projection=list(STARTD_ATTRIBUTES))
        except (self.htcondor.HTCondorException, OSError, RuntimeError, ValueError) as exc:
            raise DemandError(f"collector {self.collector or '(COLLECTOR_HOST)'}: {exc}") from exc
        return [{key: _evaluated(ad, key) for key in STARTD_ATTRIBUTES} for ad in ads]

    def drain(self, host: str) -> None:
        """DaemonsOffPeaceful to the machine's condor_master: running jobs finish, no new ones start."""
        try:
            master = self.htcondor.Collector(self.collector).locate(self.htcondor.DaemonType.Master, host)
            self.htcondor.send_command(master, self.htcondor.DaemonCommand.DaemonsOffPeaceful)
        except (self.htcondor.HTCondorException, OSError, RuntimeError, ValueError) as exc:
            raise DemandError(f"drain of {host}: {exc}") from exc


# --- the command-line tools -------------------------------------------------------------------

def parse_json_ads(text: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """``condor_q -json`` / ``condor_status -json`` output -> ads with ``keys`` evaluated.

    With classad2 installed the ads are parsed and evaluated by it (so expressions such as the default
    RequestMemory are evaluated as HTCondor would); without it, plain values are taken and expressions
    (``"/Expr(...)/"``) left unknown.
    """
    if not text.strip():
        return []  # the tools print nothing when nothing matches
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise DemandError(f"cannot parse the tool's JSON output: {exc}") from exc
    if not isinstance(raw, list) or not all(isinstance(ad, dict) for ad in raw):
        raise DemandError("the tool's JSON output is not a list of ClassAds")
    try:
        import classad2
    except ImportError:
        return [{key: None if isinstance(v := ad.get(key), str) and v.startswith("/Expr(") else v for key in keys}
                for ad in raw]
    parsed = []
    for ad in raw:  # one at a time: classad2's JSON parser reads a lone object, not a list of several
        text = json.dumps(ad).replace("/", "\\/")  # expressions are recognised only as "\/Expr(...)\/"
        try:
            parsed.append(classad2.parseOne(text, classad2.ParserType.JSON))
        except (classad2.ClassAdException, ValueError) as exc:
            raise DemandError(f"cannot parse a ClassAd of the tool's output: {exc}") from exc
    return [{key: _evaluated(ad, key) for key in keys} for ad in parsed]


Runner = Callable[[list[str], float], str]


def run_tool(command: list[str], timeout: float) -> str:
    """Run one HTCondor tool; its stdout, or DemandError saying why not."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise DemandError(f"{command[0]} not found: install HTCondor's tools, or the bindings "
                          "(pip install vcycle[htcondor])") from None
    except subprocess.TimeoutExpired:
        raise DemandError(f"{command[0]} did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise DemandError(f"{command[0]} exited with status {done.returncode}: {lines[-1] if lines else ''}")
    return done.stdout


class CommandPool:
    """The pool through ``condor_status -schedd -json`` and ``condor_q -json``."""

    def __init__(self, collector: str | None, schedds: Sequence[str] = (), timeout: float = 60.0,
                 runner: Runner = run_tool) -> None:
        self.collector = collector
        self.schedds = tuple(schedds)
        self.timeout = timeout
        self.runner = runner

    def _pool(self) -> list[str]:
        return ["-pool", self.collector] if self.collector else []

    def schedd_names(self) -> list[str]:
        if self.schedds:
            return list(self.schedds)
        out = self.runner(["condor_status", *self._pool(), "-schedd", "-json", "-attributes", "Name"], self.timeout)
        return [str(ad["Name"]) for ad in parse_json_ads(out, ("Name",)) if ad.get("Name")]

    def idle_jobs(self, constraint: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        for name in self.schedd_names():
            out = self.runner(["condor_q", *self._pool(), "-name", name, "-allusers", "-constraint", constraint,
                               "-json", "-attributes", ",".join(PROJECTION)], self.timeout)
            jobs.extend(parse_json_ads(out, JOB_ATTRIBUTES))
        return jobs

    def startds(self, space: str) -> list[dict[str, Any]]:
        out = self.runner(["condor_status", *self._pool(), "-startd", "-constraint", _space_constraint(space),
                           "-json", "-attributes", ",".join(STARTD_ATTRIBUTES)], self.timeout)
        return parse_json_ads(out, STARTD_ATTRIBUTES)

    def drain(self, host: str) -> None:
        self.runner(["condor_off", *self._pool(), "-peaceful", "-name", host], self.timeout)


def make_pool(options: HTCondorSection) -> Pool:
    """The pool a demand section's ``method`` asks for (auto: the bindings when installed)."""
    if options.method in ("auto", "bindings"):
        try:
            return BindingsPool(options.collector, options.schedds)
        except ImportError:
            if options.method == "bindings":
                raise DemandError("method = bindings, but the htcondor bindings are not installed "
                                  "(pip install vcycle[htcondor])") from None
    return CommandPool(options.collector, options.schedds, float(options.timeout_seconds))


# --- the source ----------------------------------------------------------------------------

class HTCondorDemand:
    """Idle jobs per machinetype, shaped, for every space whose machinetypes name this source."""

    def __init__(self, name: str, options: HTCondorSection,
                 machinetypes: Mapping[str, Mapping[str, MachinetypeConfig]], pool: Pool,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.name = name
        self.options = options
        self.machinetypes = machinetypes  # space -> machinetype name -> config
        self.pool = pool
        self.clock = clock
        self._hosts: dict[str, dict[str, str]] = {}  # space -> machine -> its startd's host, from registered()

    def registered(self, space: str) -> dict[str, bool]:
        """The space's machines whose startd is in the pool, and whether any of its slots is claimed."""
        busy: dict[str, bool] = {}
        hosts: dict[str, str] = {}
        for ad in self.pool.startds(space):
            name = ad.get("VCYCLE_MACHINE")
            if not isinstance(name, str) or not name:
                continue
            busy[name] = busy.get(name, False) or ad.get("State") == "Claimed"
            if isinstance(ad.get("Machine"), str):
                hosts[name] = ad["Machine"]
        self._hosts[space] = hosts
        return busy

    def drain(self, space: str, machine: str) -> None:
        """Ask the machine's startd to finish its jobs and take no more (its master: DaemonsOffPeaceful)."""
        host = self._hosts.get(space, {}).get(machine)
        if host is None:
            raise DemandError(f"machine {machine} has no startd in the pool to drain")
        self.pool.drain(host)

    def demand(self, space: str) -> dict[str, Demand]:
        now = self.clock()
        result: dict[str, Demand] = {}
        for name, mt in sorted(self.machinetypes.get(space, {}).items()):
            mine = options_of(mt.source, HTCondorMachinetype)
            constraint = job_constraint(self.options.constraint, mine.htcondor_constraint, now,
                                        self.options.min_idle_seconds)
            jobs = self.pool.idle_jobs(constraint)
            result[name] = Demand(idle_jobs=len(jobs), shapes=shapes(jobs))
        return result


def make(config: DemandConfig, context: SourceContext) -> HTCondorDemand:
    options = options_of(config.options, HTCondorSection)
    return HTCondorDemand(config.name, options, context.machinetypes, make_pool(options), context.clock)


PLUGIN = DemandPlugin(make=make, section=HTCondorSection, machinetype=HTCondorMachinetype)
