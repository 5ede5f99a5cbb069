"""Every registered connector and demand source has the contract's shape.

For each plugin of the registries (built-in and entry points): its ``PLUGIN`` is of the right kind; the class
its ``make`` returns has every method of the protocol with the protocol's parameters (a connector's also its
``api`` and user-data limit, as declared); the abilities a source claims are real methods; every key it
declares is a ``key`` field with a parser and a line of doc. A class that drifts is shown to fail the check.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, get_type_hints

import pytest

from vcycle import connectors, demand
from vcycle.connectors.base import Connector, ConnectorPlugin
from vcycle.core.options import table
from vcycle.demand.base import BatchSystem, DemandPlugin, DemandSource, NamedMachines, Watched

CONNECTOR_METHODS = ("list_machines", "create_machine", "delete_machine", "capacity", "flavors")


def drift(cls: type, protocol: type, methods: tuple[str, ...]) -> list[str]:
    """How ``cls`` differs from ``protocol`` in ``methods``: missing ones, or other parameters."""
    found = []
    for name in methods:
        ours = getattr(cls, name, None)
        if not callable(ours):
            found.append(f"{name} missing")
            continue
        want = list(inspect.signature(getattr(protocol, name)).parameters)
        have = list(inspect.signature(ours).parameters)
        if have != want:
            found.append(f"{name}{tuple(have)} is not {name}{tuple(want)}")
    return found


def keys_problems(cls: type | None) -> list[str]:
    if cls is None:
        return []
    if not dataclasses.is_dataclass(cls):
        return [f"{cls.__name__} is not a dataclass"]
    declared = table(cls)
    return [f"{cls.__name__}.{f.name} is not a key" for f in dataclasses.fields(cls) if f.name not in declared] + [
        f"{cls.__name__}.{n} has no doc" for n, o in declared.items() if not o.doc]


@pytest.mark.parametrize("name", connectors.REGISTRY.names())
def test_a_registered_connector_conforms(name: str) -> None:
    plugin = connectors.REGISTRY.load(name)
    assert isinstance(plugin, ConnectorPlugin)
    cls = get_type_hints(plugin.make)["return"]
    assert drift(cls, Connector, CONNECTOR_METHODS) == []
    assert (cls.api, cls.max_user_data_bytes) == (name, plugin.max_user_data_bytes)
    assert keys_problems(plugin.space) + keys_problems(plugin.machinetype) == []


@pytest.mark.parametrize("name", demand.REGISTRY.names())
def test_a_registered_demand_source_conforms(name: str) -> None:
    plugin = demand.REGISTRY.load(name)
    assert isinstance(plugin, DemandPlugin)
    cls = get_type_hints(plugin.make)["return"]
    assert drift(cls, DemandSource, ("demand",)) == []
    for ability in (Watched, NamedMachines):  # a source that claims an ability has it whole
        methods = tuple(n for n in vars(ability) if not n.startswith("_") and callable(getattr(ability, n)))
        if any(hasattr(cls, m) for m in methods):
            assert drift(cls, ability, methods) == [], ability.__name__
    if hasattr(cls, "registered") or hasattr(cls, "drain"):
        assert drift(cls, BatchSystem, ("registered", "drain")) == []
    assert keys_problems(plugin.section) + keys_problems(plugin.machinetype) == []


def test_the_abilities_of_the_built_in_sources_are_what_the_loop_asks_for() -> None:
    """The loop finds abilities with isinstance: HTCondor and Slurm are batch systems, DIRAC's sources, Slurm's and
    the file's are watched, the SiteDirector's and Slurm's cloud nodes hand out named machines."""
    kinds = {name: get_type_hints(demand.REGISTRY.load(name).make)["return"] for name in demand.REGISTRY.names()}
    assert {n for n, c in kinds.items() if issubclass(c, Watched)} == {"dirac", "file", "sitedirector", "slurm",
                                                                                "slurm_cloud"}
    assert {n for n, c in kinds.items() if issubclass(c, NamedMachines)} == {"sitedirector", "slurm_cloud"}
    assert {n for n, c in kinds.items() if hasattr(c, "registered")} == {"htcondor", "slurm", "slurm_cloud"}


def test_a_connector_that_drifts_fails_the_check() -> None:
    class Drifted:
        api = "drifted"
        max_user_data_bytes = 1

        def list_machines(self) -> list[Any]:
            return []

        def create_machine(self, spec: Any, zone: str) -> Any:  # a parameter the protocol does not have
            return None

        def delete_machine(self, name: str) -> None:  # named otherwise than the protocol's machine_id
            return None

    found = drift(Drifted, Connector, CONNECTOR_METHODS)
    assert any(p.startswith("create_machine(") for p in found) and any(p.startswith("delete_machine(") for p in found)
    assert "capacity missing" in found and "flavors missing" in found


def test_options_that_are_not_keys_fail_the_check() -> None:
    @dataclasses.dataclass
    class Loose:
        region: str = "us-east-1"  # a plain field: not declared with key(), so no parser, no doc

    assert keys_problems(Loose) == ["Loose.region is not a key"]
