"""One point of the time series the status page plots, made at the end of each space's cycle.

Per machinetype: its machines by state (every state but GONE, those with
none left out), the demand's idle and running jobs when known, and what this
cycle did (creates, deletes, aborts). Zero counts are left out, so a quiet
machinetype is a few bytes; a configured machinetype with nothing at all is
an empty mapping, so that plots show it at zero rather than missing.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from operator import attrgetter

from vcycle.core.model import Demand, MachineRecord
from vcycle.core.states import MachineState

MACHINETYPE, STATE = attrgetter("machinetype"), attrgetter("state")
Point = dict[str, dict[str, int]]  # machinetype -> {key: count}
KEYS = (*(s.value for s in MachineState if s is not MachineState.GONE), "idle", "running_jobs", "creates",
        "deletes", "aborts")


def counted(records: Iterable[MachineRecord]) -> collections.Counter[tuple[str, MachineState]]:
    """How many of ``records`` there are of each (machinetype, state), counted in C."""
    records = tuple(records)
    return collections.Counter(zip(map(MACHINETYPE, records), map(STATE, records), strict=True))


def point(machinetypes: Iterable[str], records: Iterable[MachineRecord], demand: Mapping[str, Demand],
          creates: Mapping[str, int], deletes: Mapping[str, int], aborts: Mapping[str, int],
          tally: Mapping[tuple[str, MachineState], int] | None = None) -> Point:
    """The point for one cycle of one space: of ``records``, or of their counts by (machinetype, state) where the
    caller keeps them (``tally``)."""
    counts: dict[str, collections.Counter[str]] = {mt: collections.Counter() for mt in machinetypes}
    if tally is None:
        tally = counted(records)
    for (mt, state), n in tally.items():
        if state is not MachineState.GONE and n:
            into = counts.get(mt)
            if into is None:
                into = counts[mt] = collections.Counter()
            into[state.value] += n
    for mt, found in demand.items():
        if found.known and mt in counts:
            counts[mt]["idle"] += found.idle_jobs
            counts[mt]["running_jobs"] += found.running_jobs
    for key, done in (("creates", creates), ("deletes", deletes), ("aborts", aborts)):
        for mt, n in done.items():
            counts.setdefault(mt, collections.Counter())[key] += n
    return {mt: {k: c[k] for k in KEYS if c[k]} for mt, c in sorted(counts.items())}


# --- points merged ------------------------------------------------------------------------------------------
#
# Points older than a day are merged (``merge``) into one per ten minutes, which carries how many points it stands
# for under the machinetype WEIGHT ("" is never a machinetype's name): a plot weighs it so, and its counts are the
# means of the points', its events their sums.

EVENTS = frozenset(("creates", "deletes", "aborts"))
WEIGHT = ""


def weight(p: Mapping[str, Mapping[str, float]]) -> float:
    """How many points ``p`` stands for."""
    return p.get(WEIGHT, {}).get("points", 1)


def merge(points: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """One point for several: counts averaged over the points they stand for, events summed."""
    total = 0.0
    sums: dict[str, dict[str, float]] = {}
    for p in points:
        w = weight(p)
        total += w
        for mt, counts in p.items():
            if mt == WEIGHT:
                continue
            into = sums.setdefault(mt, {})
            for k, v in counts.items():
                into[k] = into.get(k, 0.0) + (v if k in EVENTS else v * w)
    merged: dict[str, dict[str, float]] = {
        mt: {k: (v if k in EVENTS else round(v / total, 2)) for k, v in c.items()} for mt, c in sorted(sums.items())}
    merged[WEIGHT] = {"points": total}
    return merged
