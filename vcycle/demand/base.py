"""The demand-source contract: what vcycle asks of a source, the abilities a source may have, and how a source
module declares itself.

Every source answers ``demand(space)`` with ``{machinetype: Demand}`` or
raises DemandError (the demand is then unknown, not zero: nothing is
created on a guess, deletions go on). Beyond that a source may have
abilities, each a small Protocol the loop asks for with ``isinstance``,
never by the source's type name:

- ``BatchSystem``: its machines run its batch daemons; it says which
  machines are registered (and busy) and drains them (HTCondor's startds);
- ``Watched``: it can be asked between cycles, and wakes the daemon when more
  work waits (DIRAC's task queues, the SiteDirector's pilots);
- ``NamedMachines``: it hands out named machines, each create of its
  machinetypes taking the oldest waiting request (the SiteDirector's pilots).

A source module ends with ``PLUGIN = DemandPlugin(...)``: the keys of its
``[demand NAME]`` section and those it adds to the machinetypes naming it
(dataclasses of ``options.key`` fields), checks across them, and ``make``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from vcycle.clock import Clock
from vcycle.core.model import Demand, PilotRequest
from vcycle.core.sections import DemandConfig, MachinetypeConfig
from vcycle.store import Step, Store

MIN_POLL_SECONDS = 0.5  # a source watched between cycles is asked at most this often


class DemandSource(Protocol):
    """Required: ``demand(space)``. Raises DemandError when it cannot tell."""

    name: str

    def demand(self, space: str) -> dict[str, Demand]: ...


@runtime_checkable
class BatchSystem(Protocol):
    """A source whose machines run its batch daemons (each advertising its vcycle machine name)."""

    def registered(self, space: str) -> Mapping[str, bool]:
        """The space's machines whose daemon is registered, and whether it has work. Raises DemandError."""
        ...

    def drain(self, space: str, machine: str) -> None:
        """Ask the machine's daemon to finish its work and take no more. Raises DemandError."""
        ...


@runtime_checkable
class Watched(Protocol):
    """A source that can be asked between cycles."""

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever more work waits than at the look before (from the first demand on)."""
        ...

    def close(self) -> None:
        """Stop watching (and anything else the source started)."""
        ...


@runtime_checkable
class NamedMachines(Protocol):
    """A source that hands out named machines: each machine of its machinetypes runs one request's pilot."""

    def waiting(self, space: str) -> Mapping[str, Sequence[PilotRequest]]:
        """The space's waiting requests by machinetype, oldest first."""
        ...

    def claim(self, space: str, names: Sequence[str], now: datetime) -> Step:
        """The store step that takes these requests out of the queue, run in the same transaction as the
        REQUESTED records of their machines (so that a crash leaves either both or neither)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source is made with: the machinetypes naming it (space -> name -> config), the store, the clock."""

    machinetypes: Mapping[str, Mapping[str, MachinetypeConfig]]
    store: Store | None
    clock: Clock


@dataclass(frozen=True, slots=True)
class DemandPlugin:
    """What a demand-source module declares (its ``PLUGIN``)."""

    make: Callable[[DemandConfig, SourceContext], DemandSource]
    section: type | None = None  # the dataclass of its [demand NAME] keys (besides type)
    machinetype: type | None = None  # ... and of the keys it adds to the machinetypes naming it
    check: Callable[[Any], list[tuple[str, str]]] | None = None  # checks across its section keys
    check_machinetype: Callable[[MachinetypeConfig], list[tuple[str, str]]] | None = None


def poll_seconds(value: str) -> float:
    """A watch interval: 0 (never), or at least MIN_POLL_SECONDS."""
    try:
        seconds = float(value.strip())
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a number") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value.strip()!r} is not a number of seconds >= 0")
    if 0 < seconds < MIN_POLL_SECONDS:
        raise ValueError(f"{seconds:g} is too often: {MIN_POLL_SECONDS:g} at least (or 0: not at all)")
    return seconds
