"""``[demand NAME] type = sitedirector``: the pilots DIRAC's SiteDirector submits through the Vcycle CE.

Both halves of the pilot director, meeting in vcycle's store. The CE's half
(``Director``, which VcycleDIRAC wraps for DIRAC): ``submit`` names one
machine per pilot and records the pilots as requests; ``status``, ``kill``
and ``ce_status`` answer from the store, so a restarted SiteDirector sees
the pilots whose machines are still booting and does not submit them again.
References are ``vcycle://SPACE/MACHINE``: the pilot's reference names its
machine, which ``vcycle machines`` shows with its history.

The cycle's half (``SiteDirectorDemand``): each waiting pilot is a machine
wanted (``Demand.machines``: those waiting, and those whose machines are
still booting, which the planner counts as starting), and the source hands
out named machines: each machine the executor requests takes one waiting
pilot, its name and its wrapper. Pilots that waited longer than
``request_timeout_seconds`` are given up first, so that DIRAC sees them
Aborted and submits afresh. With ``poll_seconds`` (5 by default) the store is
looked at between cycles too, and new pilots start a cycle at once. The CE
never calls a cloud: vcycle's own cycle creates the machines under its
limits, shares, backoff and no-leak rules.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vcycle.clock import Clock, utc_now
from vcycle.core.identity import ENTROPY_BYTES, machine_name
from vcycle.core.model import Demand, PilotRequest
from vcycle.core.options import key, options_of, seconds
from vcycle.core.sections import Config, DemandConfig, MachinetypeConfig
from vcycle.core.states import MachineState
from vcycle.demand.base import DemandPlugin, SourceContext, poll_seconds
from vcycle.demand.watch import Watch
from vcycle.errors import DemandError, DirectorError, JoboutputsError, StaleState, StoreError
from vcycle.store import SpaceState, Step, Store
from vcycle.store.joboutputs import joboutputs_of
from vcycle.store.pilots import CANCELLED, EXPIRED, PENDING, PilotBook, PilotState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteDirectorSection:
    """The keys of a ``type = sitedirector`` section."""

    request_timeout_seconds: int = key(
        seconds(1), 3600, "a pilot DIRAC submitted that got no machine within this is given up (Aborted in DIRAC)")
    poll_seconds: float = key(poll_seconds, 5.0, "look this often for new pilots between cycles and start a cycle at "
                              "once for them; 0 = never")


def _check_machinetype(mt: MachinetypeConfig) -> list[tuple[str, str]]:
    if mt.target_share > 0:
        return []
    return [("target_share", f"must be more than 0: DIRAC's SiteDirector submits pilots for this machinetype "
                             f"([demand {mt.demand}] type = sitedirector), which would never get machines")]


class SiteDirectorDemand:
    """Pilots waiting for machines, per machinetype naming this source; it hands out their names."""

    def __init__(self, name: str, options: SiteDirectorSection, machinetypes: Mapping[str, Iterable[str]],
                 store: Store, clock: Clock = utc_now) -> None:
        self.name = name
        self.clock = clock
        self.timeout = options.request_timeout_seconds
        self.machinetypes = {space: sorted(names) for space, names in machinetypes.items() if names}
        self.book = PilotBook(store)
        seconds = options.poll_seconds
        self.watcher = Watch(name, seconds, self._counts, "pilots waiting for machines") if seconds else None

    def demand(self, space: str) -> dict[str, Demand]:
        if self.watcher is not None:
            self.watcher.start()
        try:
            self.book.expire(space, self.timeout, self.clock())
            waiting = self.book.waiting(space)
        except StoreError as exc:
            raise DemandError(f"pilots not read from the store: {exc}") from exc
        return {mt: Demand(idle_jobs=waiting.get(mt, 0), machines=waiting.get(mt, 0))
                for mt in self.machinetypes.get(space, ())}

    def waiting(self, space: str) -> Mapping[str, Sequence[PilotRequest]]:
        """The space's waiting pilots by machinetype, oldest first, wrappers included."""
        return self.book.pending(space)

    def claim(self, space: str, names: Sequence[str], now: datetime) -> Step:
        """Takes the pilots out of the queue, their wrappers (which carry proxies) dropped."""
        return self.book.claim(space, names, now)

    def watch(self, wake: Callable[[], None]) -> None:
        if self.watcher is not None:
            self.watcher.on_change = wake

    def _counts(self) -> dict[Hashable, int]:
        """Pilots waiting for machines, per (space, machinetype)."""
        return {(space, mt): n for space in self.machinetypes
                for mt, n in self.book.pending_counts(space).items() if mt in self.machinetypes[space]}

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def make(config: DemandConfig, context: SourceContext) -> SiteDirectorDemand:
    if context.store is None:
        raise DemandError(f"demand {config.name}: the SiteDirector's pilots are read from the state store")
    machinetypes = {space: list(found) for space, found in context.machinetypes.items()}
    return SiteDirectorDemand(config.name, options_of(config.options, SiteDirectorSection), machinetypes,
                              context.store, context.clock)


PLUGIN = DemandPlugin(make=make, section=SiteDirectorSection, check_machinetype=_check_machinetype)


def takes_pilots(config: Config, mt: MachinetypeConfig) -> bool:
    """Whether ``mt``'s machines run the pilots DIRAC's SiteDirector submits (its demand is such a section)."""
    demand = config.demands.get(mt.demand) if mt.demand is not None else None
    return demand is not None and isinstance(demand.options, SiteDirectorSection)


# --- the CE's half -------------------------------------------------------------------------------

PREFIX = "vcycle://"
S = MachineState
# DIRAC's PilotStatus values, by where the pilot's machine is
_MACHINE_STATUS = {
    S.REQUESTED: "Waiting", S.STARTING: "Scheduled", S.RUNNING: "Running", S.DRAINING: "Running",
    S.CREATE_FAILED: "Aborted", S.FAILED: "Failed",
}
_REQUEST_STATUS = {PENDING: "Waiting", CANCELLED: "Deleted", EXPIRED: "Aborted"}
FAILED_FROM = 400  # shutdown codes from 400 on (banned, failed, failed to start...) are a failed pilot


def reference(space: str, name: str) -> str:
    return f"{PREFIX}{space}/{name}"


def parse_reference(ref: str) -> tuple[str, str] | None:
    """(space, machine) of a pilot reference (``ref`` or DIRAC's ``ref:::stamp``), or None if not ours."""
    ref = ref.split(":::", 1)[0]
    if not ref.startswith(PREFIX) or ref.count("/") != 3:
        return None
    space, _, name = ref[len(PREFIX):].partition("/")
    return (space, name) if space and name else None


def pilot_status(state: PilotState | None) -> str:
    """DIRAC's PilotStatus for a pilot as the store knows it."""
    if state is None:
        return "Unknown"
    if state.machine is None:
        return _REQUEST_STATUS.get(state.request, "Unknown")  # claimed but no record: purged long ago
    if state.machine in _MACHINE_STATUS:
        return _MACHINE_STATUS[state.machine]
    if state.delete_requested:  # DIRAC killed it, or an operator deleted it
        return "Deleted"
    if state.shutdown_code is not None and state.shutdown_code >= FAILED_FROM:
        return "Failed"
    return "Done"  # stopped, deleting or gone after a normal shutdown (300 No more work included)


class Director:
    """The pilots of one space and machinetype, as a DIRAC CE queue maps them."""

    def __init__(self, config: Config, store: Store, space: str, machinetype: str, *, ce: str = "",
                 queue: str = "") -> None:
        if space not in config.spaces:
            raise DirectorError(f"VcycleSpace {space!r}: no [space {space}] in vcycle's configuration")
        machinetypes = config.spaces[space].machinetypes
        if machinetype not in machinetypes:
            raise DirectorError(f"VcycleMachinetype {machinetype!r}: no [machinetype {space} {machinetype}] in "
                                "vcycle's configuration")
        mt = machinetypes[machinetype]
        if not takes_pilots(config, mt):
            raise DirectorError(f"[machinetype {space} {machinetype}] does not take pilots from DIRAC: it needs "
                                "demand = NAME of a [demand NAME] section with type = sitedirector")
        self.config, self.store, self.book = config, store, PilotBook(store)
        self.space, self.machinetype, self.ce, self.queue = space, machinetype, ce, queue

    @property
    def mt(self) -> MachinetypeConfig:
        return self.config.spaces[self.space].machinetypes[self.machinetype]

    def submit(self, wrapper: str, count: int, now: datetime | None = None) -> dict[str, str]:
        """Record ``count`` pilots running ``wrapper``; {reference: stamp}."""
        pilots = [(machine_name(self.machinetype, secrets.token_bytes(ENTROPY_BYTES)), secrets.token_hex(16))
                  for _ in range(max(count, 0))]
        self.book.add(self.space, self.machinetype, self.ce, self.queue, pilots, wrapper, now or utc_now())
        return {reference(self.space, name): stamp for name, stamp in pilots}

    def status(self, refs: Iterable[str]) -> dict[str, str]:
        """DIRAC's PilotStatus for each reference (as given, stamps included)."""
        refs = list(refs)
        names = {ref: parsed[1] for ref in refs if (parsed := parse_reference(ref)) and parsed[0] == self.space}
        states = self.book.states(self.space, names.values())
        return {ref: pilot_status(states.get(names[ref])) if ref in names else "Unknown" for ref in refs}

    def kill(self, refs: Iterable[str], now: datetime | None = None) -> list[str]:
        """Cancel waiting pilots, ask vcycle's next cycle to delete the machines of the others; the
        references that are not this space's pilots."""
        now = now or utc_now()
        names, unknown = [], []
        for ref in refs:
            parsed = parse_reference(ref)
            if parsed and parsed[0] == self.space:
                names.append(parsed[1])
            else:
                unknown.append(ref)
        self.book.cancel(self.space, names, "DIRAC: pilot killed", now)
        live = {s.name for s in self.book.states(self.space, names).values()
                if s.machine is not None and s.machine is not S.GONE}
        if live:
            self._request_deletes(live)
        return unknown

    def _request_deletes(self, names: set[str]) -> None:
        def change(state: SpaceState) -> dict[str, Any] | None:
            marked = [dataclasses.replace(r, delete_requested="DIRAC: pilot killed") for r in state.records
                      if r.name in names and not r.delete_requested]
            return {"records": marked} if marked else None

        try:
            self.store.update(self.space, change)
        except StaleState as exc:
            raise DirectorError(f"space {self.space} is too busy to record the kill; try again") from exc

    def output(self, ref: str) -> tuple[str, str]:
        """(the pilot's log as its machine uploaded it to vcycle's joboutputs, "") or ("", "") if none yet."""
        parsed = parse_reference(ref)
        if parsed is None or parsed[0] != self.space:
            raise DirectorError(f"{ref} is not a pilot of space {self.space}")
        try:
            data = joboutputs_of(self.config.settings, self.store).read(self.space, parsed[1], "pilot.log")
        except JoboutputsError as exc:
            raise DirectorError(f"the joboutputs of {parsed[1]}: {exc.reason}") from exc
        return ("" if data is None else data.decode(errors="replace")), ""

    def ce_status(self) -> tuple[int, int]:
        """(pilots waiting for or booting in their machines, pilots whose machines run)."""
        return self.book.counts(self.space, self.machinetype).get(self.machinetype, (0, 0))

    def cleanup(self, now: datetime | None = None) -> int:
        """Give up pilots that waited longer than the sitedirector section's request_timeout_seconds."""
        now = now or utc_now()
        options = options_of(self.config.demands[self.mt.demand or ""].options, SiteDirectorSection)
        return self.book.expire(self.space, options.request_timeout_seconds, now)

