"""The JSON document of demand that a ``file`` source reads and a ``command`` source's program prints.

``{space: {machinetype: {"idle_jobs": n, "running_jobs": n}}}``; anything else is a DemandError saying where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vcycle.core.model import Demand
from vcycle.errors import DemandError


def parse_document(document: Any, where: str) -> dict[str, dict[str, Demand]]:
    """Validate ``{space: {machinetype: {"idle_jobs": n, "running_jobs": n}}}``."""
    if not isinstance(document, Mapping):
        raise DemandError(f"{where}: expected a JSON object of spaces, got {type(document).__name__}")
    result: dict[str, dict[str, Demand]] = {}
    for space, machinetypes in document.items():
        if not isinstance(machinetypes, Mapping):
            raise DemandError(f"{where}: space {space!r}: expected an object of machinetypes")
        result[str(space)] = {str(mt): _demand(counts, f"{where}: {space}/{mt}") for mt, counts in machinetypes.items()}
    return result


def _demand(counts: Any, where: str) -> Demand:
    if not isinstance(counts, Mapping):
        raise DemandError(f"{where}: expected an object with idle_jobs and running_jobs")
    values = []
    for name in ("idle_jobs", "running_jobs"):
        value = counts.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DemandError(f"{where}: {name} must be a whole number >= 0, got {value!r}")
        values.append(value)
    return Demand(idle_jobs=values[0], running_jobs=values[1])
