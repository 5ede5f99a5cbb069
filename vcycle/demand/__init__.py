"""Demand sources: how much work waits for each machinetype of a space; found by type name, imported lazily.

Each source module declares ``PLUGIN`` (a ``DemandPlugin``: its keys and ``make``; see
vcycle/demand/base.py for the contract and the abilities a source may have). Built-in sources are
registered here by dotted path: ``file``, ``command``, ``htcondor``, ``dirac`` (DIRAC's task queues) and
``sitedirector`` (the pilots DIRAC's SiteDirector submits through the Vcycle CE), ``slurm``; others arrive through
the ``vcycle.demand`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Mapping

from vcycle.clock import Clock, utc_now
from vcycle.core.sections import DemandConfig, SpaceConfig
from vcycle.demand.base import DemandPlugin, DemandSource, SourceContext
from vcycle.plugins import Registry
from vcycle.store import Store

REGISTRY: Registry[DemandPlugin] = Registry(DemandPlugin, "vcycle.demand", {
    "command": "vcycle.demand.command",
    "dirac": "vcycle.demand.dirac",
    "file": "vcycle.demand.file",
    "htcondor": "vcycle.demand.htcondor",
    "sitedirector": "vcycle.demand.sitedirector",
    "slurm": "vcycle.demand.slurm",
    "slurm_cloud": "vcycle.demand.slurm:CLOUD",
})


def make_source(config: DemandConfig, spaces: Mapping[str, SpaceConfig] | None = None,
                store: Store | None = None, clock: Clock = utc_now) -> DemandSource:
    """The source a ``[demand NAME]`` section describes (``spaces``: the site's, for sources that query per
    machinetype; ``store``: the state store; ``clock``: the cycle's). Raises DemandError."""
    machinetypes = {space.name: {mt.name: mt for mt in space.machinetypes.values() if mt.demand == config.name}
                    for space in (spaces or {}).values()}
    return REGISTRY.load(config.type).make(config, SourceContext(machinetypes, store, clock))
