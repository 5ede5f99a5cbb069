"""Connectors: one module per cloud API, found by name and imported lazily.

A connector module exposes ``OPTIONS`` (an ``ApiOptions``: the keys it adds
to its spaces and machinetypes) and, once implemented, ``make_connector``.
Built-in connectors are registered here by dotted path; others arrive
through the ``vcycle.connectors`` entry-point group. Only the modules of the
apis a configuration names are ever imported, so an OpenStack-only site
never imports boto3.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType

from vcycle.options import ApiOptions

BUILTIN: dict[str, str] = {
    "ec2": "vcycle.connectors.ec2",
    "fake": "vcycle.testing",
    "local": "vcycle.connectors.local",
    "openstack": "vcycle.connectors.openstack",
}

ENTRY_POINT_GROUP = "vcycle.connectors"


def _entry_point_paths() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def api_names() -> list[str]:
    """Every api name this installation knows, sorted."""
    return sorted({*BUILTIN, *_entry_point_paths()})


def load_api(name: str) -> ModuleType:
    """The module of api ``name``; KeyError if no such api is registered."""
    path = BUILTIN.get(name) or _entry_point_paths().get(name)
    if path is None:
        raise KeyError(name)
    return importlib.import_module(path)


def api_options(name: str) -> ApiOptions:
    """The options model of api ``name``; KeyError if unknown."""
    found = getattr(load_api(name), "OPTIONS", None)
    if not isinstance(found, ApiOptions):
        raise KeyError(name)
    return found
