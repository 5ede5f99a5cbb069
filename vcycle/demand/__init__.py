"""Demand sources: how much work waits for each machinetype of a space.

``DemandSource.demand(space)`` returns ``{machinetype: Demand}`` or raises
DemandError; the caller turns a failure into ``Demand.unknown`` for the
machinetypes that use the source, so that nothing is created on a guess
while deletions go on. Sources are made from ``[demand NAME]`` sections by
``make_source``: ``file``, ``command``, ``htcondor`` (vcycle/demand/htcondor.py), ``dirac`` (DIRAC's
task queues, vcycle/demand/dirac.py) and ``sitedirector`` (the pilots DIRAC's
SiteDirector submitted through the Vcycle CE, vcycle/demand/sitedirector.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from vcycle.clock import Clock, utc_now
from vcycle.config import DemandConfig, SpaceConfig
from vcycle.errors import DemandError
from vcycle.model import Demand
from vcycle.store import Store


class DemandSource(Protocol):
    """Required: ``demand(space)``. Raises DemandError when it cannot tell."""

    name: str

    def demand(self, space: str) -> dict[str, Demand]: ...


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
    for key in ("idle_jobs", "running_jobs"):
        value = counts.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DemandError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
        values.append(value)
    return Demand(idle_jobs=values[0], running_jobs=values[1])


def make_source(config: DemandConfig, spaces: Mapping[str, SpaceConfig] | None = None,
                store: Store | None = None, clock: Clock = utc_now) -> DemandSource:
    """The source a ``[demand NAME]`` section describes (``spaces``: the site's, for sources that query per
    machinetype; ``store``: the state store, where the SiteDirector's pilots wait; ``clock``: the cycle's)."""
    machinetypes = {space.name: {mt.name: mt for mt in space.machinetypes.values() if mt.demand == config.name}
                    for space in (spaces or {}).values()}
    if config.type == "file":
        from vcycle.demand.file import FileDemand

        return FileDemand(config.name, config.values["path"])
    if config.type == "command":
        from vcycle.demand.command import CommandDemand

        return CommandDemand(config.name, config.values["command"], config.values["timeout_seconds"])
    if config.type == "htcondor":
        from vcycle.demand.htcondor import HTCondorDemand, make_pool

        return HTCondorDemand(config.name, config.values, machinetypes, make_pool(config.values))
    if config.type == "dirac":
        from vcycle.demand.dirac import DiracDemand

        return DiracDemand(config.name, config.values, machinetypes)
    if config.type == "sitedirector":
        from vcycle.demand.sitedirector import SiteDirectorDemand

        if store is None:
            raise DemandError(f"demand {config.name}: the SiteDirector's pilots are read from the state store")
        return SiteDirectorDemand(config.name, config.values, machinetypes, store, clock)
    raise DemandError(f"demand {config.name}: type {config.type!r} is not available in this version")
