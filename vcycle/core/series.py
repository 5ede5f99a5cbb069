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

from vcycle.core.model import Demand, MachineRecord
from vcycle.core.states import MachineState

Point = dict[str, dict[str, int]]  # machinetype -> {key: count}
KEYS = (*(s.value for s in MachineState if s is not MachineState.GONE), "idle", "running_jobs", "creates",
        "deletes", "aborts")


def point(machinetypes: Iterable[str], records: Iterable[MachineRecord], demand: Mapping[str, Demand],
          creates: Mapping[str, int], deletes: Mapping[str, int], aborts: Mapping[str, int]) -> Point:
    """The point for one cycle of one space."""
    counts: dict[str, collections.Counter[str]] = {mt: collections.Counter() for mt in machinetypes}
    for record in records:
        if record.state is not MachineState.GONE:
            counts.setdefault(record.machinetype, collections.Counter())[record.state.value] += 1
    for mt, found in demand.items():
        if found.known and mt in counts:
            counts[mt]["idle"] += found.idle_jobs
            counts[mt]["running_jobs"] += found.running_jobs
    for key, done in (("creates", creates), ("deletes", deletes), ("aborts", aborts)):
        for mt, n in done.items():
            counts.setdefault(mt, collections.Counter())[key] += n
    return {mt: {k: c[k] for k in KEYS if c[k]} for mt, c in sorted(counts.items())}
