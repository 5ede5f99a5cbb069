"""The simulated batch system: the trace's jobs queue, run on the machines vcycle made, and end.

At each step, jobs whose time is up finish; jobs that arrived queue for
their machinetype; idle jobs start, oldest first, on the running machines of
their machinetype (oldest machine first) that have the cores free. A pilot
whose machine has nothing to run and nothing waiting ends: its machine
sends "200 No more work" and powers off, as the shipped templates do. A
machine taken away while its jobs ran (deleted at its wallclock, interrupted)
puts them back at the head of the queue: they start again from the beginning.

Each machinetype that names a demand source sees the idle jobs as HTCondor
would report them: their count and their shapes (cores, memory).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from vcycle.core.model import Demand, JobShape
from vcycle.sim.trace import Job


@dataclass(slots=True)
class _Slot:
    """A running machine as the batch system sees it."""

    space: str
    machinetype: str
    name: str
    cores: int
    free: int
    jobs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """What happened to one job."""

    job: Job
    machinetype: str
    started: float | None = None  # seconds after the start of the simulation
    ended: float | None = None
    restarts: int = 0


class Batch:
    """The trace's jobs and the machines that run them."""

    def __init__(self, jobs: Iterable[Job], start: datetime, default: str,
                 machinetypes: Mapping[str, tuple[str, ...]]) -> None:
        """``machinetypes``: machinetype -> the spaces it is configured in; a job for no configured machinetype
        goes to ``default``."""
        self.start = start
        self.outcomes = {j.id: Outcome(j, j.machinetype if j.machinetype and j.machinetype in machinetypes
                                       else default) for j in jobs}
        self.arrivals = deque(sorted(self.outcomes.values(), key=lambda o: (o.job.arrival, o.job.id)))
        self.idle: dict[str, deque[Outcome]] = {mt: deque() for mt in machinetypes}
        self.idle.setdefault(default, deque())
        self.running: dict[str, tuple[_Slot, float]] = {}  # job id -> its machine, when it ends
        self.running_of: Counter[str] = Counter()  # machinetype -> its jobs running
        self.slots: dict[tuple[str, str], _Slot] = {}
        self.busy_core_seconds = 0.0
        self.requeued = 0

    def step(self, now: datetime, running: Mapping[str, Iterable[tuple[str, str, int]]]) -> list[tuple[str, str]]:
        """Advance to ``now``: ``running`` is space -> (machinetype, name, cores) of each machine running now.
        The (space, machine) whose pilots end now."""
        at = (now - self.start).total_seconds()
        for job_id, (slot, ends) in list(self.running.items()):
            if ends <= at:
                self._finish(job_id, slot, ends)
        alive = {(space, name): (mt, cores) for space, machines in running.items() for mt, name, cores in machines}
        for key in [k for k in self.slots if k not in alive]:  # deleted or interrupted under its jobs
            slot = self.slots.pop(key)
            for job_id in reversed(slot.jobs):
                outcome = self.outcomes[job_id]
                del self.running[job_id]
                self.running_of[slot.machinetype] -= 1
                self.busy_core_seconds += outcome.job.cores * (at - (outcome.started or at))  # work lost
                outcome.started, outcome.restarts = None, outcome.restarts + 1
                self.idle[outcome.machinetype].appendleft(outcome)
                self.requeued += 1
        for (space, name), (mt, cores) in alive.items():
            if (space, name) not in self.slots:
                self.slots[(space, name)] = _Slot(space, mt, name, cores, cores)
        while self.arrivals and self.arrivals[0].job.arrival <= at:
            outcome = self.arrivals.popleft()
            self.idle[outcome.machinetype].append(outcome)
        self._match(at)
        ending = []
        for key, slot in self.slots.items():
            if not slot.jobs and not self.idle.get(slot.machinetype):
                ending.append(key)
        for key in ending:
            del self.slots[key]
        return ending

    def _finish(self, job_id: str, slot: _Slot, ends: float) -> None:
        outcome = self.outcomes[job_id]
        outcome.ended = ends
        self.busy_core_seconds += outcome.job.cores * outcome.job.duration
        del self.running[job_id]
        self.running_of[slot.machinetype] -= 1
        slot.jobs.remove(job_id)
        slot.free += outcome.job.cores

    def _match(self, at: float) -> None:
        """Each idle job, in its queue's order, to the first slot of its machinetype with room for it."""
        by_type: dict[str, list[_Slot]] = {}
        for slot in self.slots.values():
            if slot.free > 0:  # full slots take nothing (a job needs a core at least)
                by_type.setdefault(slot.machinetype, []).append(slot)
        for mt, queue in self.idle.items():
            slots = by_type.get(mt, [])
            most = max((s.free for s in slots), default=0)  # no job needing more than this fits
            waiting: deque[Outcome] = deque()
            while queue:
                outcome = queue.popleft()
                cores = outcome.job.cores
                found = next((s for s in slots if s.free >= cores), None) if cores <= most else None
                if found is None:
                    waiting.append(outcome)
                    continue
                found.free -= cores
                found.jobs.append(outcome.job.id)
                if found.free <= 0:
                    slots.remove(found)
                    most = max((s.free for s in slots), default=0)
                outcome.started = at
                self.running[outcome.job.id] = (found, at + outcome.job.duration)
                self.running_of[mt] += 1
            self.idle[mt] = waiting

    def demand(self, machinetype: str) -> Demand:
        """What the machinetype's demand source reports now."""
        queue = self.idle.get(machinetype, deque())
        shapes = Counter((o.job.cores, o.job.memory_mb) for o in queue)
        running = self.running_of[machinetype]
        return Demand(idle_jobs=len(queue), running_jobs=running,
                      shapes=tuple(JobShape(c, m, 0, n) for (c, m), n in sorted(shapes.items())))

    def counts(self, machinetype: str) -> tuple[int, int]:
        """(idle, running) jobs of the machinetype now."""
        return (len(self.idle.get(machinetype, ())),
                self.running_of[machinetype])

    def busy(self, now: datetime) -> float:
        """Processors x seconds of work done until ``now``: jobs finished, lost and still running."""
        at = (now - self.start).total_seconds()
        return self.busy_core_seconds + sum(self.outcomes[j].job.cores * (at - (self.outcomes[j].started or at))
                                            for j in self.running)

    def done(self) -> bool:
        return not self.arrivals and not self.running and not any(self.idle.values())
