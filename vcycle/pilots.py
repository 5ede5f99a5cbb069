"""What the Vcycle CE (VcycleDIRAC) does, without DIRAC: pilots in, answers out, all through vcycle's store.

DIRAC's SiteDirector hands the CE a pilot wrapper and a number of pilots.
``Director.submit`` names one machine per pilot and records the pilots as
requests in vcycle's state store; vcycle's own cycle then requests the
machines under the same limits, shares, backoff and no-leak rules as any
other (the CE never calls a cloud). ``status``, ``kill`` and ``ce_status``
answer from the store, so a restarted SiteDirector sees the pilots whose
machines are still booting and does not submit them again.

References are ``vcycle://SPACE/MACHINE``: the pilot's reference names its
machine, which ``vcycle machines`` shows with its history.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vcycle.clock import utc_now
from vcycle.config import Config, MachinetypeConfig, load_config
from vcycle.errors import ConfigError, StaleState, VcycleError
from vcycle.executor import new_machine_name
from vcycle.states import MachineState
from vcycle.store import SpaceState, Store
from vcycle.store.pilots import CANCELLED, EXPIRED, PENDING, PilotBook, PilotState

PREFIX = "vcycle://"
S = MachineState
# DIRAC's PilotStatus values, by where the pilot's machine is
_MACHINE_STATUS = {
    S.REQUESTED: "Waiting", S.STARTING: "Scheduled", S.RUNNING: "Running", S.DRAINING: "Running",
    S.CREATE_FAILED: "Aborted", S.FAILED: "Failed",
}
_REQUEST_STATUS = {PENDING: "Waiting", CANCELLED: "Deleted", EXPIRED: "Aborted"}
FAILED_FROM = 400  # shutdown codes from 400 on (banned, failed, failed to start...) are a failed pilot


class DirectorError(VcycleError):
    """The CE cannot act: bad CE parameters, a configuration or store problem. The message says which."""


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
        if not config.takes_pilots(mt):
            raise DirectorError(f"[machinetype {space} {machinetype}] does not take pilots from DIRAC: it needs "
                                "demand = NAME of a [demand NAME] section with type = sitedirector")
        self.config, self.store, self.book = config, store, PilotBook(store)
        self.space, self.machinetype, self.ce, self.queue = space, machinetype, ce, queue

    @classmethod
    def open(cls, config_paths: Sequence[str] | None, space: str, machinetype: str, **where: str) -> Director:
        """Load vcycle's configuration (default: vcycle's own locations) and open its store."""
        try:
            config = load_config(list(config_paths) if config_paths else None)
        except ConfigError as exc:
            raise DirectorError("vcycle's configuration is invalid: " + "; ".join(map(str, exc.problems))) from exc
        try:
            store = Store.open(config.settings.state_url)
        except VcycleError as exc:
            raise DirectorError(f"vcycle's state store: {exc}") from exc
        return cls(config, store, space, machinetype, **where)

    @property
    def mt(self) -> MachinetypeConfig:
        return self.config.spaces[self.space].machinetypes[self.machinetype]

    def submit(self, wrapper: str, count: int, now: datetime | None = None) -> dict[str, str]:
        """Record ``count`` pilots running ``wrapper``; {reference: stamp}."""
        pilots = [(new_machine_name(self.machinetype), uuid.uuid4().hex) for _ in range(max(count, 0))]
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
        path = Path(self.config.settings.joboutputs_dir, self.space, parsed[1], "pilot.log")
        try:
            return path.read_text(errors="replace"), ""
        except FileNotFoundError:
            return "", ""
        except OSError as exc:
            raise DirectorError(f"{path}: {exc.strerror}") from exc

    def ce_status(self) -> tuple[int, int]:
        """(pilots waiting for or booting in their machines, pilots whose machines run)."""
        return self.book.counts(self.space, self.machinetype).get(self.machinetype, (0, 0))

    def cleanup(self, now: datetime | None = None) -> int:
        """Give up pilots that waited longer than the sitedirector section's request_timeout_seconds."""
        now = now or utc_now()
        timeout = int(self.config.demands[self.mt.demand or ""].values["request_timeout_seconds"])
        return self.book.expire(self.space, timeout, now)

