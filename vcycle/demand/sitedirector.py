"""``[demand NAME] type = sitedirector``: the pilots DIRAC's SiteDirector submitted through the Vcycle CE.

The CE (VcycleDIRAC) records each pilot in vcycle's store; here each one
is a machine wanted (``Demand.machines``: those waiting, and those whose
machines are still booting, which the planner counts as starting). The
executor then gives each machine it requests one waiting pilot: its name
and its wrapper. Pilots that waited longer than ``request_timeout_seconds``
are given up first, so that DIRAC sees them Aborted and submits afresh.
With ``poll_seconds`` (5 by default) the store is looked at between cycles
too, and new pilots start a cycle at once.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from vcycle.clock import Clock, utc_now
from vcycle.demand.watch import Watch
from vcycle.errors import DemandError, StoreError
from vcycle.model import Demand
from vcycle.store import Store
from vcycle.store.pilots import PilotBook

log = logging.getLogger(__name__)


class SiteDirectorDemand:
    """Pilots waiting for machines, per machinetype naming this source."""

    def __init__(self, name: str, values: Mapping[str, Any], machinetypes: Mapping[str, Iterable[str]],
                 store: Store, clock: Clock = utc_now) -> None:
        self.name = name
        self.clock = clock
        self.timeout = int(values["request_timeout_seconds"])
        self.machinetypes = {space: sorted(names) for space, names in machinetypes.items() if names}
        self.book = PilotBook(store)
        seconds = float(values.get("poll_seconds") or 0.0)
        self.watch = Watch(name, seconds, self._counts, "pilots waiting for machines") if seconds > 0 else None

    def demand(self, space: str) -> dict[str, Demand]:
        if self.watch is not None:
            self.watch.start()
        try:
            self.book.expire(space, self.timeout, self.clock())
            waiting = self.book.waiting(space)
        except StoreError as exc:
            raise DemandError(f"pilots not read from the store: {exc}") from exc
        return {mt: Demand(idle_jobs=waiting.get(mt, 0), machines=waiting.get(mt, 0))
                for mt in self.machinetypes.get(space, ())}

    def _counts(self) -> dict[Hashable, int]:
        """Pilots waiting for machines, per (space, machinetype)."""
        return {(space, mt): n for space in self.machinetypes
                for mt, n in self.book.pending_counts(space).items() if mt in self.machinetypes[space]}

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
