"""The live machines the endpoint answers for, kept in memory and refreshed from the store.

Requests are authenticated against this index, never against the database,
so a flood of requests (forged or not) costs no queries. A machine's record
is committed before its create call; one that calls before the next refresh
(a local machine starts at once) is looked up in the store, within a bound
on such lookups a second. GONE machines are not here: their tokens stop
working.
"""

from __future__ import annotations

import logging
import threading

from vcycle.core.model import MachineRecord
from vcycle.core.states import MachineState
from vcycle.errors import StoreError
from vcycle.store import Store

log = logging.getLogger(__name__)
MISSES_PER_SECOND = 50


class Directory:
    """(space, name) -> the machine's live record, as the store last showed it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._records: dict[tuple[str, str], MachineRecord] = {}
        self._by_name: dict[str, list[MachineRecord]] = {}
        self._spaces: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self.refreshed = False
        self._miss_window = 0.0
        self._misses = 0

    def refresh(self) -> bool:
        """Read every space's live records (cheaply: unchanged spaces come from the store's cache)."""
        try:
            states = self.store.spaces()
        except StoreError as exc:
            log.warning("endpoint: machines not refreshed from the store: %s", exc)
            return False
        records: dict[tuple[str, str], MachineRecord] = {}
        by_name: dict[str, list[MachineRecord]] = {}
        for space, state in states.items():
            for record in state.records:
                records[(space, record.name)] = record
                by_name.setdefault(record.name, []).append(record)
        with self._lock:
            self._records, self._by_name, self._spaces = records, by_name, frozenset(states)
            self.refreshed = True
        return True

    def get(self, space: str, name: str) -> MachineRecord | None:
        return self._records.get((space, name))

    def named(self, name: str) -> MachineRecord | None:
        """The one live machine of that name in any space (the old vcycle's paths had no space)."""
        found = self._by_name.get(name, [])
        return found[0] if len(found) == 1 else None

    def lookup(self, name: str, space: str | None, now: float) -> MachineRecord | None:
        """Ask the store for a machine not (yet) in memory: one created since the last refresh.

        At most ``MISSES_PER_SECOND`` such queries are made, so requests for
        unknown machines (forged or stale) cannot load the database.
        """
        with self._lock:
            if now - self._miss_window >= 1.0:
                self._miss_window, self._misses = now, 0
            if self._misses >= MISSES_PER_SECOND:
                return None
            self._misses += 1
        try:
            found = [r for r in self.store.find(name, space) if r.state is not MachineState.GONE]
        except StoreError as exc:
            log.warning("endpoint: machine %s not looked up: %s", name, exc)
            return None
        if len(found) != 1:
            return None
        record = found[0]
        with self._lock:
            self._records[(record.space, record.name)] = record
            self._by_name.setdefault(record.name, []).append(record)
        return record

    def records(self) -> list[MachineRecord]:
        return list(self._records.values())

    def spaces(self) -> frozenset[str]:
        return self._spaces

    def live(self) -> set[tuple[str, str]]:
        return set(self._records)
