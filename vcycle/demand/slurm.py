"""``[demand NAME] type = slurm``: pending Slurm jobs, by shape, per machinetype; machines followed as nodes.

Demand: the jobs ``squeue --json`` shows pending in the section's
``partitions`` (default all), for a reason more machines would help with
(resources, priority, a node or feature not up, a partition with no node
yet: ``COUNTED``), pending for at least ``min_idle_seconds``. Held jobs, jobs
waiting on a dependency or a begin time, and jobs beyond a limit (QOS,
association, partition) are not counted: each reason is one row of
``REASONS``. A machinetype serves the jobs of its ``slurm_partition`` whose
``--constraint`` its ``slurm_constraint`` features satisfy, each job counted
once per space (for the first machinetype by name that serves it). Per node,
a job's CPUs, memory (``--mem``, or ``--mem-per-cpu`` times its CPUs) and
temporary disk become ``JobShape`` counts (an array counts its pending
tasks, up to its throttle; a job of N nodes N times), which the planner packs
into machines of the machinetype's size. A job whose GPUs per node are more
than ``slurm_gpus``, or whose time limit is longer than the machinetype's
``max_wallclock_seconds``, is not counted and is named in the demand's
reason.

Machines as nodes: a machine's slurmd joins the cluster as a node named after
the machine (the shipped ``slurm-worker`` template starts it as a dynamic
node). ``registered`` reads ``sinfo --json``: a node that answers is
registered, busy while it has CPUs allocated; a drained node (idle with the
DRAIN flag) and a node that does not respond are not. ``drain`` is ``scontrol
update nodename=NAME state=drain reason=...``: running jobs finish, no new
ones start, and vcycle deletes the machine once it is drained.

Slurm's commands are run with ``SLURM_CONF`` from ``slurm_conf`` if given;
any failure (no answer within ``timeout_seconds``, a command missing, JSON
that does not parse) is a DemandError: the demand is unknown, nothing is
created, deletions go on, and the cycle says why in one line. 22.05's
``--json`` ignores squeue's and sinfo's filters, so everything is filtered
here (finished jobs stay listed for MinJobAge).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vcycle.clock import utc_now
from vcycle.core.identity import ENTROPY_BYTES, machine_name
from vcycle.core.model import Demand, JobShape
from vcycle.core.options import choice, integer, key, options_of, seconds, text, words
from vcycle.core.sections import DemandConfig, MachinetypeConfig
from vcycle.core.states import ALIVE_STATES
from vcycle.demand.base import DemandPlugin, SourceContext, poll_seconds
from vcycle.demand.watch import Watch
from vcycle.errors import DemandError, StoreError
from vcycle.store import Store
from vcycle.store.pilots import PilotBook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmSection:
    """The keys of a ``type = slurm`` section."""

    partitions: tuple[str, ...] = key(words, (), "partitions whose pending jobs count; default all")
    method: str = key(choice("commands", "rest"), "commands", "squeue and sinfo --json, or slurmrestd (rest_url)")
    rest_url: str | None = key(text, None, "slurmrestd's address, http://HOST:PORT (method = rest)")
    rest_user: str | None = key(text, None, "the user the token is for (X-SLURM-USER-NAME; method = rest)")
    rest_token_file: str | None = key(text, None, "a file holding that user's JWT (scontrol token), read at each "
                                      "call so that it can be renewed in place (method = rest)")
    rest_api_version: str = key(text, "v0.0.38", "slurmrestd's API version (22.05: v0.0.38)")
    min_idle_seconds: int = key(seconds(0), 0, "jobs pending for less than this are not counted yet")
    slurm_conf: str | None = key(text, None, "the cluster's slurm.conf (SLURM_CONF); default Slurm's own")
    timeout_seconds: int = key(seconds(1), 30, "how long one Slurm command may take")
    poll_seconds: float = key(poll_seconds, 0.0, "also ask this often between cycles and start a cycle at once "
                              "when more jobs are pending; 0 = only at cycles")
    drain_reason: str = key(text, "vcycle: retiring machine", "the reason given to Slurm for a drain")


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmMachinetype:
    """The keys a ``type = slurm`` source adds to the machinetypes naming it."""

    slurm_partition: tuple[str, ...] = key(words, (), "the partitions this machinetype's nodes serve; default the "
                                           "section's partitions")
    slurm_constraint: tuple[str, ...] = key(words, (), "the features its nodes have: a job's --constraint must be "
                                            "satisfied by them")
    slurm_gpus: int = key(integer(0, 1024), 0, "GPUs of each of its machines: jobs asking for more per node are "
                          "not counted")


# Why a pending job waits -> whether more machines would help (True), or not (False). Reasons not listed are not
# counted either (a limit, an account, a reservation, a licence): the REASONS table is the policy.
COUNTED = frozenset({
    "None",  # just submitted: the scheduler has not looked at it yet
    "Resources", "Priority",  # no room now / behind higher-priority jobs that wait for room
    "ReqNodeNotAvail", "NodeDown", "BadConstraints",  # the nodes or features it needs are not up (yet)
    "PartitionConfig", "PartitionNodeLimit",  # a partition with no node, or too few (vcycle's nodes join it)
    "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions",
})
REASONS: dict[str, bool] = {
    **dict.fromkeys(COUNTED, True),
    **dict.fromkeys(("JobHeldUser", "JobHeldAdmin", "Dependency", "DependencyNeverSatisfied", "BeginTime",
                     "JobArrayTaskLimit", "PartitionDown", "PartitionInactive", "PartitionTimeLimit", "Reservation",
                     "Licenses", "InvalidQOS", "InvalidAccount", "AssocGrpCpuLimit", "AssocMaxJobsLimit",
                     "QOSMaxJobsPerUserLimit", "QOSGrpCpuLimit", "launch_failed_requeued_held", "SystemFailure",
                     "JobLaunchFailure", "NonZeroExitCode"), False),
}
UNLIMITED = 0xFFFFFFFE  # Slurm's INFINITE/NO_VAL in time_limit (minutes)


def counted_reason(reason: str | None) -> bool:
    """Whether a pending job with this reason is demand (the REASONS table; unknown reasons are not)."""
    return REASONS.get(reason or "None", False)


def tasks(array: str | None) -> int:
    """The pending tasks of an array record (``1-1000``, ``1,3,5-7``, ``1-9:2``, ``1-10%3``: at most 3 at once);
    1 for a plain job."""
    if not array:
        return 1
    ranges, _, throttle = array.partition("%")
    count = 0
    for part in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if match is None:
            continue
        first, last, step = int(match[1]), int(match[2] or match[1]), int(match[3] or 1)
        count += len(range(first, last + 1, max(step, 1)))
    if throttle.strip().isdigit():
        count = min(count, int(throttle))
    return max(count, 1)


def gpus_per_node(job: Mapping[str, Any]) -> int:
    """GPUs a job asks for on each of its nodes (``--gres=gpu:N``, ``--gpus-per-node``, ``--gpus`` spread over
    its nodes, ``--gpus-per-task`` times its tasks per node)."""
    def count(value: Any) -> int:
        total = 0
        for item in str(value or "").split(","):  # gres:gpu:2, gres:gpu:fake:2 (22.05), gres/gpu:2 (later)
            parts = item.strip().replace("gres/", "gres:").split(":")
            if parts and parts[0] == "gres":
                parts = parts[1:]
            if parts and parts[0] == "gpu":
                total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return total

    nodes = max(int(job.get("node_count") or 1), 1)
    per_task = count(job.get("tres_per_task")) * math.ceil(max(int(job.get("tasks") or 1), 1) / nodes)
    return count(job.get("tres_per_node")) + math.ceil(count(job.get("tres_per_job")) / nodes) + per_task


def node_shape(job: Mapping[str, Any]) -> tuple[int, int, int]:
    """(CPUs, memory MB, temporary disk KiB) a job asks for on each of its nodes."""
    nodes = max(int(job.get("node_count") or 1), 1)
    cpus = max(int(job.get("minimum_cpus_per_node") or 0), math.ceil(max(int(job.get("cpus") or 1), 1) / nodes), 1)
    memory = job.get("memory_per_node")
    if memory is None and job.get("memory_per_cpu") is not None:
        memory = int(job["memory_per_cpu"]) * cpus
    disk = int(job.get("minimum_tmp_disk_per_node") or 0) * 1024
    return cpus, max(int(memory or 0), 0), disk


def satisfied(constraint: str | None, features: Iterable[str]) -> bool:
    """Whether nodes with ``features`` satisfy a job's ``--constraint`` (``a``, ``a&b``, ``a,b``, ``a|b``);
    counts and brackets (``[a*2&b]``) are never taken as satisfied."""
    if not constraint:
        return True
    if any(c in constraint for c in "[]*()"):
        return False
    have = set(features)
    return any(all(term in have for term in re.split(r"[&,]", alternative) if term)
               for alternative in constraint.split("|"))


@dataclass(frozen=True, slots=True)
class Served:
    """What a machinetype serves: its partitions (empty: any), features, GPUs per machine, longest time limit."""

    partitions: frozenset[str]
    features: tuple[str, ...]
    gpus: int
    minutes: float

    def takes(self, job: Mapping[str, Any]) -> bool:
        mine = {p for p in str(job.get("partition") or "").split(",") if p}
        return (not self.partitions or bool(mine & self.partitions)) and satisfied(job.get("features"), self.features)


def pending(jobs: Iterable[Mapping[str, Any]], partitions: Sequence[str], now: datetime,
            min_idle_seconds: int) -> list[Mapping[str, Any]]:
    """The jobs that are demand: pending, for a counted reason, in the partitions, pending long enough."""
    wanted = set(partitions)
    found = []
    for job in jobs:
        if job.get("job_state") != "PENDING" or not counted_reason(job.get("state_reason")):
            continue
        if wanted and not wanted & set(str(job.get("partition") or "").split(",")):
            continue
        since = job.get("eligible_time") or job.get("submit_time") or 0
        if min_idle_seconds and now.timestamp() - float(since) < min_idle_seconds:
            continue
        found.append(job)
    return found


def demand_for(jobs: Iterable[Mapping[str, Any]], served: Mapping[str, Served]) -> dict[str, Demand]:
    """Each job counted for the first machinetype (by name) that serves it, by shape; those it cannot run named
    in the reason."""
    shapes: dict[str, collections.Counter[tuple[int, int, int]]] = {name: collections.Counter() for name in served}
    refused: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in served}
    for job in jobs:
        for name in sorted(served):
            mine = served[name]
            if not mine.takes(job):
                continue
            count = tasks(job.get("array_task_string")) * max(int(job.get("node_count") or 1), 1)
            limit = int(job.get("time_limit") or 0)
            if gpus_per_node(job) > mine.gpus:
                refused[name]["ask for more GPUs per node than slurm_gpus"] += count
            elif limit >= UNLIMITED or (limit and limit > mine.minutes):
                refused[name]["have a time limit over max_wallclock_seconds"] += count
            else:
                shapes[name][node_shape(job)] += count
            break
    result = {}
    for name in served:
        found = tuple(JobShape(c, m, d, n) for (c, m, d), n in sorted(shapes[name].items()))
        reason = "; ".join(f"{n} pending job nodes not counted: they {why}" for why, n in sorted(refused[name].items()))
        result[name] = Demand(idle_jobs=sum(s.count for s in found), shapes=found, reason=reason)
    return result


# --- the cluster --------------------------------------------------------------------------------

Runner = Callable[[list[str], float], str]


class Cluster:
    """Slurm's commands, with ``SLURM_CONF`` if given, each bounded by ``timeout``."""

    def __init__(self, slurm_conf: str | None = None, timeout: float = 30.0, runner: Runner | None = None) -> None:
        self.slurm_conf = slurm_conf
        self.timeout = timeout
        self.runner = runner or self._run

    def _run(self, command: list[str], timeout: float) -> str:
        env = {**os.environ, **({"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {})}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        except FileNotFoundError:
            raise DemandError(f"{command[0]} not found: install Slurm's client commands (Debian's slurm-client)") \
                from None
        except subprocess.TimeoutExpired:
            raise DemandError(f"{command[0]} did not answer within {timeout:g} s (is slurmctld up?)") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise DemandError(f"{command[0]} exited with status {done.returncode}: {lines[-1] if lines else ''}")
        return done.stdout

    def _json(self, command: list[str], field_: str) -> list[dict[str, Any]]:
        return self._parse(self.runner(command, self.timeout), command[0], field_)

    @staticmethod
    def _parse(out: str | bytes, what: str, field_: str) -> list[dict[str, Any]]:
        try:
            document = json.loads(out)
            items = document[field_]
        except (ValueError, KeyError, TypeError) as exc:
            raise DemandError(f"{what} --json: not the document Slurm writes ({exc})") from exc
        if document.get("errors"):  # 22.05 reports a controller it cannot reach here, with status 0
            said = "; ".join(f"{e.get('description') or e.get('error')} ({e.get('source')}: {e.get('error')})"
                             if isinstance(e, dict) else str(e) for e in document["errors"])
            raise DemandError(f"{what}: {said} (is slurmctld up and reachable?)")
        return list(items)

    def jobs(self) -> list[dict[str, Any]]:
        return self._json(["squeue", "--json"], "jobs")

    def nodes(self) -> list[dict[str, Any]]:
        return self._json(["sinfo", "--json"], "nodes")

    def drain(self, node: str, reason: str) -> None:
        self.runner(["scontrol", "update", f"nodename={node}", "state=drain", f"reason={reason}"], self.timeout)


class RestCluster(Cluster):
    """The same documents from slurmrestd (``GET /slurm/VERSION/jobs`` and ``/nodes``, JWT authentication); drains
    still go through scontrol, as v0.0.38 has no node update."""

    def __init__(self, url: str, user: str, token_file: str, version: str = "v0.0.38",
                 slurm_conf: str | None = None, timeout: float = 30.0, runner: Runner | None = None) -> None:
        super().__init__(slurm_conf, timeout, runner)
        self.url, self.user, self.token_file, self.version = url.rstrip("/"), user, token_file, version

    def _get(self, path: str, field_: str) -> list[dict[str, Any]]:
        where = f"slurmrestd at {self.url}"
        try:
            with open(self.token_file) as stream:
                token = stream.read().strip().removeprefix("SLURM_JWT=")
        except OSError as exc:
            raise DemandError(f"{where}: rest_token_file {self.token_file}: {exc.strerror}") from None
        request = urllib.request.Request(f"{self.url}/slurm/{self.version}/{path}",
                                         headers={"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text_ = answer.read()
        except urllib.error.HTTPError as exc:
            said = exc.read()[:2000].decode("utf-8", "replace")
            try:
                errors = json.loads(said).get("errors") or said
            except ValueError:
                errors = said.strip() or exc.reason
            raise DemandError(f"{where}: {exc.code} for /{path}: {errors} (is the token in {self.token_file} "
                              f"valid for {self.user}?)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DemandError(f"{where}: {reason}") from None
        return self._parse(text_, f"slurmrestd /{path}", field_)

    def jobs(self) -> list[dict[str, Any]]:
        return self._get("jobs", "jobs")

    def nodes(self) -> list[dict[str, Any]]:
        return self._get("nodes", "nodes")


def node_state(node: Mapping[str, Any]) -> tuple[bool, bool]:
    """(registered, busy) of one node: it answers and is not drained; busy while CPUs are allocated to it."""
    flags = set(node.get("state_flags") or ())
    state = str(node.get("state") or "")
    if state in ("down", "unknown", "future") or flags & {"NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN"}:
        return False, False
    busy = int(node.get("alloc_cpus") or 0) > 0 or state in ("allocated", "mixed")
    if "DRAIN" in flags and not busy:
        return False, False  # drained: its work is done, as a startd that left the pool
    return True, busy


class SlurmDemand:
    """Pending jobs per machinetype, shaped, for every space whose machinetypes name this source; its machines'
    nodes registered and drained."""

    def __init__(self, name: str, options: SlurmSection,
                 machinetypes: Mapping[str, Mapping[str, MachinetypeConfig]], cluster: Cluster,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.name = name
        self.options = options
        self.machinetypes = machinetypes  # space -> machinetype name -> config
        self.cluster = cluster
        self.clock = clock
        self.latest: tuple[float, list[dict[str, Any]]] | None = None  # (monotonic, jobs) of the watch's last look
        self.watcher = Watch(name, options.poll_seconds, self._counts, "pending jobs") if options.poll_seconds else None

    def _served(self, space: str) -> dict[str, Served]:
        found = {}
        for name, mt in self.machinetypes.get(space, {}).items():
            mine = options_of(mt.source, SlurmMachinetype)
            found[name] = Served(frozenset(mine.slurm_partition or self.options.partitions), mine.slurm_constraint,
                                 mine.slurm_gpus, mt.max_wallclock_seconds / 60)
        return found

    def _jobs(self) -> list[dict[str, Any]]:
        if self.watcher is not None:
            self.watcher.start()
            if self.latest is not None and time.monotonic() - self.latest[0] < self.options.poll_seconds:
                return self.latest[1]
        return self.cluster.jobs()

    def demand(self, space: str) -> dict[str, Demand]:
        jobs = pending(self._jobs(), self.options.partitions, self.clock(), self.options.min_idle_seconds)
        return demand_for(jobs, self._served(space))

    def registered(self, space: str) -> dict[str, bool]:
        """Every node that answers and is not drained, and whether it has work (its name is its machine's)."""
        found = {}
        for node in self.cluster.nodes():
            registered, busy = node_state(node)
            if registered:
                found[str(node["name"])] = busy
        return found

    def drain(self, space: str, machine: str) -> None:
        self.cluster.drain(machine, self.options.drain_reason)

    def watch(self, wake: Callable[[], None]) -> None:
        """With poll_seconds: ask between cycles too (from the first demand on) and ``wake`` when more wait."""
        if self.watcher is not None:
            self.watcher.on_change = wake

    def _counts(self) -> dict[Hashable, int]:
        jobs = self.cluster.jobs()
        self.latest = (time.monotonic(), jobs)
        counts: dict[Hashable, int] = {}
        now = self.clock()
        for space in self.machinetypes:
            found = demand_for(pending(jobs, self.options.partitions, now, self.options.min_idle_seconds),
                               self._served(space))
            counts.update({(space, mt): d.idle_jobs for mt, d in found.items()})
        return counts

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop(self.cluster.timeout + 5)


def _check(options: SlurmSection) -> list[tuple[str, str]]:
    if options.method != "rest":
        return []
    return [(name, "is required with method = rest") for name in ("rest_url", "rest_user", "rest_token_file")
            if not getattr(options, name)]


def make(config: DemandConfig, context: SourceContext) -> SlurmDemand:
    options = options_of(config.options, SlurmSection)
    timeout = float(options.timeout_seconds)
    cluster = (RestCluster(options.rest_url or "", options.rest_user or "", options.rest_token_file or "",
                           options.rest_api_version, options.slurm_conf, timeout)
               if options.method == "rest" else Cluster(options.slurm_conf, timeout))
    return SlurmDemand(config.name, options, context.machinetypes, cluster, context.clock)


PLUGIN = DemandPlugin(make=make, section=SlurmSection, machinetype=SlurmMachinetype, check=_check)


# --- Slurm's own cloud mode: ResumeProgram and SuspendProgram ------------------------------------------------

def hostnames(expression: str) -> list[str]:
    """A Slurm hostlist (``cl[1-3,5]``, ``gpu[01-02]``, ``a,b[1-2]``, ``r[1-2]n[1-2]``) as its names, in order."""
    pieces, depth, start = [], 0, 0
    for index, char in enumerate(expression):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            pieces.append(expression[start:index])
            start = index + 1
    pieces.append(expression[start:])
    names: list[str] = []
    for piece in (p.strip() for p in pieces):
        match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\](.*)", piece)
        if match is None:
            if piece:
                names.append(piece)
            continue
        head, ranges, rest = match.groups()
        tails = hostnames(rest) if rest else [""]
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not first.isdigit() or (last and not last.isdigit()):
                raise ValueError(f"{expression!r} is not a Slurm hostlist")
            width = len(first) if first.startswith("0") else 0
            for number in range(int(first), int(last or first) + 1):
                names += [f"{head}{number:0{width}d}{tail}" for tail in tails]
    return names


def _hostlist(value: str) -> tuple[str, ...]:
    names = tuple(hostnames(value.strip()))
    if not names:
        raise ValueError("names no node")
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmCloudSection:
    """The keys of a ``type = slurm_cloud`` section: the machines Slurm's ResumeProgram asks for."""

    slurm_conf: str | None = key(text, None, "the cluster's slurm.conf (SLURM_CONF); default Slurm's own")
    timeout_seconds: int = key(seconds(1), 30, "how long one Slurm command may take")
    request_timeout_seconds: int = key(seconds(1), 600, "a node Slurm resumed that got no machine within this is "
                                       "given up and set down in Slurm with the reason")
    poll_seconds: float = key(poll_seconds, 2.0, "look this often for nodes Slurm resumed and start a cycle at once "
                              "for them; 0 = only at cycles")
    drain_reason: str = key(text, "vcycle: retiring machine", "the reason given to Slurm for a drain")


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmCloudMachinetype:
    """The keys a ``type = slurm_cloud`` source adds to its machinetypes."""

    slurm_cloud_nodes: tuple[str, ...] | None = key(_hostlist, None, "the State=CLOUD nodes of slurm.conf this "
                                                    "machinetype's machines become (a hostlist: cloud[1-20])")


def _check_cloud_machinetype(mt: MachinetypeConfig) -> list[tuple[str, str]]:
    problems = []
    if not options_of(mt.source, SlurmCloudMachinetype).slurm_cloud_nodes:
        problems.append(("slurm_cloud_nodes", "is required: the State=CLOUD nodes of slurm.conf this machinetype "
                                              "becomes (a hostlist: cloud[1-20])"))
    if mt.target_share <= 0:
        problems.append(("target_share", "must be more than 0: the nodes Slurm resumes would never get machines"))
    return problems


RESUMED = "resumed by slurmctld (ResumeProgram)"
ALIVE = frozenset(s.value for s in ALIVE_STATES)  # a machine in one of these is (or will be) the node
SUSPENDED = "suspended by slurmctld (SuspendProgram)"


class SlurmCloud:
    """The machines of Slurm's cloud nodes: each node slurmctld resumes is a request for one named machine (the
    node's name as its stamp), created by the cycle under the space's limits; the machine's slurmd registers as
    that node, and is followed, drained and deleted as a node."""

    def __init__(self, name: str, options: SlurmCloudSection,
                 machinetypes: Mapping[str, Mapping[str, MachinetypeConfig]], store: Store, cluster: Cluster,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.name = name
        self.options = options
        self.machinetypes = {space: sorted(found) for space, found in machinetypes.items() if found}
        self.book = PilotBook(store)
        self.cluster = cluster
        self.clock = clock
        seconds_ = options.poll_seconds
        self.watcher = Watch(name, seconds_, self._counts, "nodes resumed by Slurm") if seconds_ else None

    def demand(self, space: str) -> dict[str, Demand]:
        if self.watcher is not None:
            self.watcher.start()
        try:
            self._give_up(space)
            waiting = self.book.waiting(space)
        except StoreError as exc:
            raise DemandError(f"resumed nodes not read from the store: {exc}") from exc
        return {mt: Demand(idle_jobs=waiting.get(mt, 0), machines=waiting.get(mt, 0))
                for mt in self.machinetypes.get(space, ())}

    def _give_up(self, space: str) -> None:
        """Requests older than request_timeout_seconds are given up, and their nodes set down in Slurm."""
        before = {stamp: name for stamp, (name, state, _) in self.book.stamps(space).items() if state == "pending"}
        if not self.book.expire(space, self.options.request_timeout_seconds, self.clock()):
            return
        after = self.book.stamps(space)
        for node in sorted(before):
            if node not in after or after[node][1] != "pending":
                self.report_down(node, f"vcycle: no machine within {self.options.request_timeout_seconds}s")

    def report_down(self, node: str, reason: str) -> None:
        try:
            self.cluster.runner(["scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}"],
                                self.cluster.timeout)
        except DemandError as exc:
            log.warning("demand=%s node %s not set down in Slurm: %s", self.name, node, exc)

    def waiting(self, space: str) -> Mapping[str, Sequence[Any]]:
        return {mt: found for mt, found in self.book.pending(space).items() if mt in self.machinetypes.get(space, ())}

    def claim(self, space: str, names: Sequence[str], now: datetime) -> Any:
        return self.book.claim(space, names, now)

    def _machines(self, space: str) -> dict[str, str]:
        """Node -> the machine that is (or will be) it."""
        return {stamp: name for stamp, (name, _, _) in self.book.stamps(space).items()}

    def registered(self, space: str) -> dict[str, bool]:
        machines = self._machines(space)
        found = {}
        for node in self.cluster.nodes():
            registered, busy = node_state(node)
            if registered and node.get("name") in machines:
                found[machines[str(node["name"])]] = busy
        return found

    def drain(self, space: str, machine: str) -> None:
        node = next((n for n, m in self._machines(space).items() if m == machine), None)
        if node is None:
            raise DemandError(f"machine {machine} is no Slurm node's")
        self.cluster.drain(node, self.options.drain_reason)

    def watch(self, wake: Callable[[], None]) -> None:
        if self.watcher is not None:
            self.watcher.on_change = wake

    def _counts(self) -> dict[Hashable, int]:
        return {(space, mt): n for space in self.machinetypes
                for mt, n in self.book.pending_counts(space).items() if mt in self.machinetypes[space]}

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def _cloud_machinetypes(config: Any) -> dict[str, tuple[str, str]]:
    """Node -> (space, machinetype) of every machinetype of a ``type = slurm_cloud`` source."""
    found: dict[str, tuple[str, str]] = {}
    for space in config.spaces.values():
        for mt in space.machinetypes.values():
            section = config.demands.get(mt.demand) if mt.demand else None
            if section is not None and isinstance(section.options, SlurmCloudSection):
                for node in options_of(mt.source, SlurmCloudMachinetype).slurm_cloud_nodes or ():
                    found.setdefault(node, (space.name, mt.name))
    return found


def resume(config: Any, store: Store, nodes: Sequence[str], now: datetime) -> dict[str, str]:
    """What ``vcycle slurm-resume`` does: one request for a named machine per node (unless one waits or its
    machine lives); node -> what went wrong, for the nodes that got none."""
    book = PilotBook(store)
    owners = _cloud_machinetypes(config)
    problems: dict[str, str] = {}
    wanted: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    live: dict[str, dict[str, tuple[str, str, str]]] = {}
    for node in nodes:
        if node not in owners:
            problems[node] = "no machinetype has it in slurm_cloud_nodes"
            continue
        space, mt = owners[node]
        if space not in live:
            live[space] = book.stamps(space)
        known = live[space].get(node)
        if known is not None and (known[1] == "pending" or known[2] in ALIVE):
            continue  # asked for already: waiting, or its machine is alive
        wanted[(space, mt)].append((machine_name(mt, os.urandom(ENTROPY_BYTES)), node))
    for (space, mt), pilots in sorted(wanted.items()):
        book.add(space, mt, "slurm", "", pilots, "", now, reason=RESUMED)
    return problems


def suspend(config: Any, store: Store, nodes: Sequence[str], now: datetime) -> dict[str, str]:
    """What ``vcycle slurm-suspend`` does: a node's waiting request is cancelled, its machine deleted by the next
    cycle; node -> what went wrong."""
    book = PilotBook(store)
    owners = _cloud_machinetypes(config)
    problems: dict[str, str] = {}
    doomed: dict[str, set[str]] = collections.defaultdict(set)
    stamps: dict[str, dict[str, tuple[str, str, str]]] = {}
    for node in nodes:
        if node not in owners:
            problems[node] = "no machinetype has it in slurm_cloud_nodes"
            continue
        space, _ = owners[node]
        if space not in stamps:
            stamps[space] = book.stamps(space)
        known = stamps[space].get(node)
        if known is None:
            continue
        name, request, _ = known
        if request == "pending":
            book.cancel(space, [name], SUSPENDED, now)
        doomed[space].add(name)
    for space, names in doomed.items():
        def change(state: Any, names: set[str] = names) -> dict[str, Any] | None:
            marked = [dataclasses.replace(r, delete_requested=SUSPENDED) for r in state.records
                      if r.name in names and not r.delete_requested]
            return {"records": marked} if marked else None

        store.update(space, change)
    return problems


def make_cloud(config: DemandConfig, context: SourceContext) -> SlurmCloud:
    if context.store is None:
        raise DemandError(f"demand {config.name}: the nodes Slurm resumes are read from the state store")
    options = options_of(config.options, SlurmCloudSection)
    return SlurmCloud(config.name, options, context.machinetypes, context.store,
                      Cluster(options.slurm_conf, float(options.timeout_seconds)), context.clock)


CLOUD = DemandPlugin(make=make_cloud, section=SlurmCloudSection, machinetype=SlurmCloudMachinetype,
                     check_machinetype=_check_cloud_machinetype)
