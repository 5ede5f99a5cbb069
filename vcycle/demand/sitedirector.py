"""``[demand NAME] type = sitedirector``: the pilots DIRAC's SiteDirector submitted through the Vcycle CE.

The CE (VcycleDIRAC) records each pilot in vcycle's store; here each one
is a machine wanted (``Demand.machines``: those waiting, and those whose
machines are still booting, which the planner counts as starting). The
executor then gives each machine it requests one waiting pilot: its name
and its wrapper. Pilots that waited longer than ``request_timeout_seconds``
are given up first, so that DIRAC sees them Aborted and submits afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vcycle.clock import Clock, utc_now
from vcycle.errors import DemandError, StoreError
from vcycle.model import Demand
from vcycle.pilots import expire_pilots
from vcycle.store import Store
from vcycle.store.pilots import PilotBook


class SiteDirectorDemand:
    """Pilots waiting for machines, per machinetype naming this source."""

    def __init__(self, name: str, values: Mapping[str, Any], machinetypes: Mapping[str, Iterable[str]],
                 store: Store, clock: Clock = utc_now) -> None:
        self.name = name
        self.clock = clock
        self.timeout = int(values["request_timeout_seconds"])
        self.machinetypes = {space: sorted(names) for space, names in machinetypes.items()}
        self.book = PilotBook(store)

    def demand(self, space: str) -> dict[str, Demand]:
        try:
            expire_pilots(self.book, space, self.timeout, self.clock())
            waiting = self.book.waiting(space)
        except StoreError as exc:
            raise DemandError(f"pilots not read from the store: {exc}") from exc
        return {mt: Demand(idle_jobs=waiting.get(mt, 0), machines=waiting.get(mt, 0))
                for mt in self.machinetypes.get(space, ())}
