"""Replay: a trace made from the demand a real store recorded, to run against another configuration.

The store keeps, for each cycle of each space, the idle and running jobs its
demand sources reported per machinetype (the status page's time series). A
machinetype's demand is read from the first space that recorded it (every
space with that machinetype hears the same source). Between two points,
the rise in idle jobs plus the rise in running jobs is that many arrivals
(a lower bound: jobs that came and started within one cycle are not seen);
every job lasts the mean time jobs ran there, by Little's law (the mean of
the running jobs over the arrivals per second), one core each, since the
series keeps no shapes.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

from vcycle.errors import StoreError
from vcycle.sim.trace import Job, TraceError
from vcycle.store import Store
from vcycle.store.series import Series


def jobs(url: str, since: datetime) -> list[Job]:
    """The trace of the demand recorded in the store at ``url`` from ``since`` on. Raises TraceError."""
    try:
        store = Store.open(url, readonly=True)
    except StoreError as exc:
        raise TraceError(f"cannot replay: {exc}") from None
    try:
        recorded = Series(store).read_all(since)
    finally:
        store.close()
    timelines: dict[str, list[tuple[datetime, float, float]]] = {}
    for _space, points in sorted(recorded.items()):
        seen: dict[str, list[tuple[datetime, float, float]]] = {}
        for at, point in points:
            for mt, counts in point.items():
                if mt and ("idle" in counts or "running_jobs" in counts or mt in seen):
                    seen.setdefault(mt, []).append((at, counts.get("idle", 0.0), counts.get("running_jobs", 0.0)))
        for mt, line in seen.items():
            timelines.setdefault(mt, line)
    found: list[Job] = []
    for mt, line in sorted(timelines.items()):
        found += _arrivals(mt, line, line[0][0])
    if not found:
        raise TraceError(f"cannot replay: the store at {url} recorded no demand since {since.isoformat()}")
    start = min(j.arrival for j in found)
    return sorted((Job(j.id, j.arrival - start, j.cores, j.memory_mb, j.duration, j.machinetype) for j in found),
                  key=lambda j: (j.arrival, j.id))


def _arrivals(mt: str, line: list[tuple[datetime, float, float]], origin: datetime) -> list[Job]:
    times: list[float] = []
    for (_, idle0, run0), (at, idle1, run1) in pairwise(line):
        rise = round(idle1 - idle0 + max(0.0, run1 - run0))
        times += [(at - origin).total_seconds()] * max(0, rise)
    first_idle = round(line[0][1])
    times = [0.0] * max(0, first_idle) + times
    if not times:
        return []
    span = max((line[-1][0] - line[0][0]).total_seconds(), 1.0)
    mean_running = sum(r for _, _, r in line) / len(line)
    step = span / max(1, len(line) - 1)
    duration = max(step, mean_running * span / len(times))  # Little's law: L = lambda W
    return [Job(f"{mt}-{n:06d}", t, 1, 2000, duration, mt) for n, t in enumerate(times)]
