"""The one exception tree of vcycle.

Every error vcycle raises on purpose is one of these; SDK and library errors
are caught at the boundary that called them and re-raised as one of these
with ``raise ... from``::

    VcycleError
     +-- ConfigError          fatal at start-up; carries every ConfigProblem
     +-- StateError
     |    +-- InvalidTransition   a move the machine state table forbids
     |    +-- StaleState          a concurrent writer got there first
     +-- DemandError          a demand source failed: demand is unknown
     +-- StoreError           the state store cannot be opened or used
     +-- RenderError          a machinetype's user-data cannot be rendered: none of it is created
     +-- ConnectorError
          +-- CloudUnavailable    skip this space this cycle
          +-- QuotaExceeded       back off the machinetype
          +-- LaunchRejected      bad image/flavor/user-data: back off, log loudly
          +-- NotFound            the machine is not there (success for delete)

This module must not import anything from the rest of vcycle.
"""

from __future__ import annotations

from dataclasses import dataclass


class VcycleError(Exception):
    """Base class of every error vcycle raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in the configuration, located as precisely as known."""

    file: str
    section: str
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file or "<configuration>"
        if self.section:
            where += f": [{self.section}]"
        if self.key:
            where += f" {self.key}"
        return f"{where}: {self.message}"


class ConfigError(VcycleError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration error(s):\n{lines}")


class StateError(VcycleError):
    """Base class of machine state and store consistency errors."""


class InvalidTransition(StateError):
    """A machine state change that the state table does not allow."""


class StaleState(StateError):
    """Another writer changed the space's state since it was read."""


class DemandError(VcycleError):
    """A demand source could not tell the demand; it is unknown, not zero."""


class StoreError(VcycleError):
    """The state store cannot be opened, migrated or used."""


class RenderError(VcycleError):
    """A machinetype's user-data cannot be rendered; no machine of it is created this cycle."""


class ConnectorError(VcycleError):
    """Base class of the errors a connector may raise."""


class CloudUnavailable(ConnectorError):
    """The cloud cannot be reached or answers 5xx: skip the space this cycle."""


class QuotaExceeded(ConnectorError):
    """The cloud refused a create for lack of quota or capacity."""


class LaunchRejected(ConnectorError):
    """The cloud refused a create because of what was asked (image, flavor, user-data)."""


class NotFound(ConnectorError):
    """The machine does not exist in the cloud."""
