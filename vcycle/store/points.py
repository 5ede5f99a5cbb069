"""How a time-series point (vcycle/core/series.py) is kept in the store: compact JSON.

A point is kept as {machinetype: [count, ...]}, the counts in the order of
STORED with trailing zeros left out: a quiet machinetype costs a few bytes,
not its key names. STORED only ever grows at its end, so that points kept
earlier read the same; the first points, kept as named counts, read as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from vcycle.core.series import WEIGHT

STORED = ("requested", "starting", "running", "draining", "stopped", "failed", "deleting", "delete_failed",
          "create_failed", "idle", "running_jobs", "creates", "deletes", "aborts")  # append only


def encode(p: Mapping[str, Mapping[str, float]]) -> str:
    """The point as it is kept."""
    kept: dict[str, list[float]] = {}
    for mt, counts in p.items():
        if mt == WEIGHT:
            values = [counts.get("points", 1)]
        else:
            unplaced = set(counts) - set(STORED)
            if unplaced:
                raise ValueError(f"no place kept for {sorted(unplaced)}: append it to STORED")
            values = [counts.get(k, 0) for k in STORED]
        while values and not values[-1]:
            values.pop()
        kept[mt] = [round(v, 2) if isinstance(v, float) else v for v in values]
    return json.dumps(kept, separators=(",", ":"))


def decode(text: str) -> dict[str, dict[str, float]]:
    """A kept point, as ``series.point`` made it (or as ``series.merge`` did)."""
    found: dict[str, dict[str, float]] = {}
    for mt, values in json.loads(text).items():
        if isinstance(values, dict):
            found[mt] = values
        elif mt == WEIGHT:
            found[mt] = {"points": values[0] if values else 1}
        else:
            found[mt] = {k: v for k, v in zip(STORED, values, strict=False) if v}
    return found
