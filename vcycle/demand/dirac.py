"""``[demand NAME] type = dirac``: the waiting jobs of DIRAC's task queues, per machinetype.

Each machinetype naming the source is described to DIRAC as a CE queue
(site, CE, queue, tags and required tags, CPU time, SI00, processors, RAM,
platform, VO, owner groups: its ``dirac_*`` keys) and matched against the
task queues with the Matcher's ``getMatchingTaskQueues``, as VMDIRAC's
director and DIRAC's SiteDirector do. The jobs of the matching queues whose
owner group belongs to the VO become the machinetype's demand; a job that
asks for N processors (its queue's ``NProcessors`` tag) counts for N, and
the planner packs the jobs into machines of the machinetype's size.

DIRAC is asked from a worker process (vcycle/demand/dirac_worker.py, run by
the section's ``python``), with the host credentials and DIRAC
configuration the section names. An unreachable or failing DIRAC, a worker
that does not answer within ``timeout_seconds``, or one that cannot start,
is a DemandError: the demand is unknown, nothing is created for those
machinetypes, deletions go on, and the cycle says why in one line.

With ``poll_seconds`` set, a thread also asks between cycles and wakes the
daemon (vcycle/demand/watch.py) as soon as a machinetype has more waiting
jobs than it had, so that a job reaching Waiting gets its machine within
about ``poll_seconds`` rather than a whole cycle.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vcycle.core.model import Demand, JobShape
from vcycle.core.options import integer, key, options_of, seconds, text, words
from vcycle.core.sections import DemandConfig, MachinetypeConfig
from vcycle.demand.base import DemandPlugin, SourceContext, poll_seconds
from vcycle.demand.watch import Watch
from vcycle.errors import DemandError

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("dirac_worker.py")
_PROCESSORS_TAG = re.compile(r"^([0-9]+)Processors$")
SETTINGS = ("configuration", "matcher_url", "host_cert", "host_key", "ca_dir")  # what the worker is given


@dataclass(frozen=True, slots=True, kw_only=True)
class DiracSection:
    """The keys of a ``type = dirac`` section."""

    configuration: tuple[str, ...] = key(
        words, (), "DIRAC configuration files the client reads (its dirac.cfg); needed unless matcher_url is set")
    matcher_url: str | None = key(text, None, "the Matcher service, dips://HOST:PORT/WorkloadManagement/Matcher")
    host_cert: str = key(text, "/etc/grid-security/hostcert.pem", "the host certificate DIRAC trusts")
    host_key: str = key(text, "/etc/grid-security/hostkey.pem", "its key")
    ca_dir: str = key(text, "/etc/grid-security/certificates", "the CA certificates directory")
    vo: str | None = key(text, None, "count only jobs of this VO's groups (as DIRAC's SiteDirector does)")
    python: str | None = key(text, None, "a Python with DIRAC installed; default the one vcycle runs under")
    timeout_seconds: int = key(seconds(1), 60, "how long one question to DIRAC may take")
    poll_seconds: float = key(poll_seconds, 0.0, "also ask this often between cycles and start a cycle at once "
                              "when waiting jobs appear; 0 = ask once per cycle")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiracMachinetype:
    """The CE queue a machinetype is to DIRAC's Matcher, as a SiteDirector queue."""

    dirac_site: str | None = key(text, None, "the DIRAC site name, e.g. LCG.CERN.cern; default the space's name")
    dirac_ce: str | None = key(text, None, "the CE name jobs may ask for (GridCE); default the space's name")
    dirac_queue: str = key(text, "default", "the queue name")
    dirac_tags: tuple[str, ...] = key(words, (),
                                      "tags the machines offer (Tag); N-processor machines add NProcessors")
    dirac_required_tags: tuple[str, ...] = key(words, (), "tags a job must have to be matched (RequiredTag)")
    dirac_max_cpu_time: int = key(integer(1), 2880, "the queue's maxCPUTime in minutes; with dirac_si00 it gives "
                                  "the CPUTime jobs are matched to")
    dirac_si00: int | None = key(integer(1), None,
                                 "SI00 of one processor; default 250 x hs06_per_processor, else 2500")
    dirac_max_ram_mb: int | None = key(integer(1), None, "MaxRAM offered; default mb_per_processor x processors")
    dirac_platform: str | None = key(text, None, "the DIRAC platform the machines offer")
    dirac_vo: str | None = key(text, None, "count only jobs of this VO; default the demand section's vo")
    dirac_owner_group: tuple[str, ...] = key(words, (), "count only jobs of these DIRAC groups")


def _check(options: DiracSection) -> list[tuple[str, str]]:
    if not options.configuration and not options.matcher_url:
        return [("matcher_url", "DIRAC's Matcher is needed: set matcher_url, or configuration (a dirac.cfg naming it)")]
    return []


def ce_description(mt: MachinetypeConfig, vo: str | None) -> dict[str, Any]:
    """The CE queue a machinetype is to DIRAC's Matcher (DIRAC's names; CPUTime as DIRAC computes it)."""
    queue = options_of(mt.source, DiracMachinetype)
    processors = mt.min_processors
    si00 = queue.dirac_si00 or (round(250 * mt.hs06_per_processor) if mt.hs06_per_processor else 2500)
    max_cpu_minutes = min(max(queue.dirac_max_cpu_time, 0), int(86400 * 12.5))
    tags = list(queue.dirac_tags)
    if processors > 1:  # what the queue's pilots can run: jobs of up to ``processors`` processors
        tags += ["MultiProcessor", *(f"{n}Processors" for n in range(2, processors + 1))]
    description: dict[str, Any] = {
        "Site": queue.dirac_site or mt.space,
        "GridCE": queue.dirac_ce or mt.space,
        "Queue": queue.dirac_queue,
        "CEType": "Vcycle",
        "CPUTime": 60 * max_cpu_minutes * si00 // 250,  # DIRAC's 60 / 250 * maxCPUTime * SI00, without rounding
        "NumberOfProcessors": processors,
        "MaxRAM": int(queue.dirac_max_ram_mb or mt.mb_per_processor * processors),
        "Tag": sorted(set(tags)),
        "RequiredTag": sorted(set(queue.dirac_required_tags)),
    }
    if queue.dirac_platform:
        description["Platform"] = queue.dirac_platform
    if vo:
        description["VO"] = vo
    if queue.dirac_owner_group:
        description["OwnerGroup"] = list(queue.dirac_owner_group)
    return description


def job_processors(tags: list[str], machine_processors: int) -> int:
    """Processors one job of a task queue asks for: its NProcessors tag; a whole machine for WholeNode or a
    MultiProcessor job without a number; else 1."""
    numbers = [int(m.group(1)) for tag in tags if (m := _PROCESSORS_TAG.match(tag))]
    if numbers:
        return max(numbers)
    if "WholeNode" in tags or "MultiProcessor" in tags:
        return machine_processors
    return 1


def demand_of(queues: list[Mapping[str, Any]], machine_processors: int) -> Demand:
    """A machinetype's demand from its matching task queues: jobs by processors, each counting for that many."""
    counts: collections.Counter[int] = collections.Counter()
    for tq in queues:
        jobs = int(tq.get("jobs", 0))
        if jobs > 0:
            counts[job_processors(list(tq.get("tags", [])), machine_processors)] += jobs
    shapes = tuple(JobShape(processors, 0, 0, n) for processors, n in sorted(counts.items()))
    return Demand(idle_jobs=sum(p * n for p, n in counts.items()), shapes=shapes)


class Worker:
    """One worker process speaking the dirac_worker protocol; restarted after any failure."""

    def __init__(self, python: str, settings: Mapping[str, Any], timeout: float, name: str) -> None:
        self.command = [python, str(WORKER)]
        self.settings = dict(settings)
        self.timeout = timeout
        self.name = name
        self.process: subprocess.Popen[str] | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=5)
        self.lock = threading.Lock()

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The worker's answer to ``request``; DemandError if it fails, says no, or takes too long."""
        with self.lock:
            try:
                if self.process is None or self.process.poll() is not None:
                    self._start()
                assert self.process is not None and self.process.stdin is not None
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                reply = self._read()
            except (OSError, ValueError, DemandError) as exc:
                self.close()
                raise DemandError(f"DIRAC not asked: {exc}") from exc
        if not reply.get("ok"):
            raise DemandError(f"DIRAC refused: {reply.get('error', 'no reason given')}")
        return reply

    def _start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True,
                         name=f"vcycle-dirac-{self.name}-log").start()
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.settings) + "\n")
        self.process.stdin.flush()
        ready = self._read()
        if not ready.get("ready"):
            raise DemandError(str(ready.get("error", "the worker did not start")))

    def _drain(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self.log_tail.append(line.rstrip())
            log.debug("demand=%s DIRAC: %s", self.name, line.rstrip())

    def _read(self) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(self.timeout):
                raise DemandError(f"no answer within {self.timeout:g}s")
        line = process.stdout.readline()
        if not line:
            process.wait(5)
            tail = " | ".join(self.log_tail) or "nothing on stderr"
            raise DemandError(f"the worker ({' '.join(self.command)}) ended with status {process.returncode}: "
                              f"{tail[-500:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class DiracDemand:
    """Waiting jobs of DIRAC's task queues for the machinetypes that name this source."""

    def __init__(self, name: str, options: DiracSection,
                 machinetypes: Mapping[str, Mapping[str, MachinetypeConfig]], worker: Worker | None = None) -> None:
        self.name = name
        self.machinetypes = machinetypes  # space -> machinetype name -> config
        self.vo = options.vo
        self.poll_seconds = options.poll_seconds
        settings = {setting: getattr(options, setting) for setting in SETTINGS}
        self.worker = worker or Worker(options.python or sys.executable, settings, float(options.timeout_seconds),
                                       name)
        self.latest: dict[tuple[str, str], tuple[float, Demand]] = {}
        self.watcher = Watch(name, self.poll_seconds, self._counts, "waiting jobs") if self.poll_seconds else None

    def _ask(self, spaces: list[str]) -> dict[tuple[str, str], Demand]:
        queues, vos, sizes = {}, {}, {}
        for space in spaces:
            for mt in self.machinetypes.get(space, {}).values():
                where = f"{space}/{mt.name}"
                vo = options_of(mt.source, DiracMachinetype).dirac_vo or self.vo
                queues[where], vos[where], sizes[where] = ce_description(mt, vo), vo, mt.min_processors
        if not queues:
            return {}
        reply = self.worker.ask({"queues": queues, "vo": vos})
        found = {}
        now = time.monotonic()
        for where, tqs in reply["queues"].items():
            space, _, machinetype = where.partition("/")
            found[(space, machinetype)] = demand_of(tqs, sizes[where])
            self.latest[(space, machinetype)] = (now, found[(space, machinetype)])
        return found

    def demand(self, space: str) -> dict[str, Demand]:
        if self.watcher is not None:
            self.watcher.start()
            fresh = {mt: d for (s, mt), (at, d) in list(self.latest.items())
                     if s == space and time.monotonic() - at < self.poll_seconds}
            if fresh and set(fresh) == set(self.machinetypes.get(space, {})):
                return fresh
        return {mt: d for (s, mt), d in self._ask([space]).items()}

    def watch(self, wake: Callable[[], None]) -> None:
        """With poll_seconds: ask between cycles too (from the first demand on) and ``wake`` when jobs wait."""
        if self.watcher is not None:
            self.watcher.on_change = wake

    def _counts(self) -> dict[Hashable, int]:
        return {key: d.idle_jobs for key, d in self._ask(sorted(self.machinetypes)).items()}

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop(self.worker.timeout + 5)
        self.worker.close()


def make(config: DemandConfig, context: SourceContext) -> DiracDemand:
    return DiracDemand(config.name, options_of(config.options, DiracSection), context.machinetypes)


PLUGIN = DemandPlugin(make=make, section=DiracSection, machinetype=DiracMachinetype, check=_check)
