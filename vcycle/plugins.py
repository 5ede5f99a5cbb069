"""Plugins found by name: built-in ones by dotted path, others through an entry-point group; imported lazily.

Connectors (``vcycle.connectors``) and demand sources (``vcycle.demand``) are
both found this way. A plugin is a module with a ``PLUGIN`` object (a
``ConnectorPlugin`` or a ``DemandPlugin``), or an entry point naming such an
object (``package.module:NAME``). Only the plugins a configuration names are
ever imported, so an OpenStack-only site never imports boto3.

This module imports nothing of vcycle: the plugin packages hand it the class
their plugins must be.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """The plugins of one kind: ``names()``, and ``load(name)`` for one (KeyError if unknown)."""

    def __init__(self, kind: type[T], group: str, builtin: Mapping[str, str]) -> None:
        self.kind = kind
        self.group = group
        self.builtin = dict(builtin)
        self._found: dict[str, str] | None = None

    def _entry_points(self) -> dict[str, str]:
        """The group's entry points, looked for once in a process: the look reads every installed distribution's
        metadata (milliseconds each time), and a configuration asks for each machinetype. A plugin installed
        later is found by the next process (a daemon: after a restart)."""
        if self._found is None:
            self._found = {ep.name: ep.value for ep in entry_points(group=self.group)}
        return self._found

    def names(self) -> list[str]:
        """Every plugin name this installation knows, sorted."""
        return sorted({*self.builtin, *self._entry_points()})

    def load(self, name: str) -> T:
        """The plugin ``name``. KeyError if none is registered; ImportError if it cannot be loaded;
        TypeError if what is registered is not a plugin of this kind."""
        path = self.builtin.get(name) or self._entry_points().get(name)
        if path is None:
            raise KeyError(name)
        module, _, attribute = path.partition(":")
        found = getattr(importlib.import_module(module), attribute or "PLUGIN", None)
        if not isinstance(found, self.kind):
            raise TypeError(f"{path} is not a {self.kind.__name__} (entry-point group {self.group})")
        return found
