"""This manager's share of the spaces, where several managers share one PostgreSQL store.

A ``Holder`` thread runs a round every ROUND_SECONDS: it says it is alive,
reads the leases and the managers alive (those heard from within
``lease_renew_seconds``: a dead one is left out of the spread well before its
leases expire, so that nothing is handed to it), claims the free spaces the spread gives it (core/leases.py),
hands on those it gives another (between two of their cycles), and renews
what it holds every ``lease_renew_seconds``. What it holds is known twice:
in the store, under an epoch raised at every claim, and here, until a local
deadline taken on this host's monotonic clock *before* the renewal was sent
(so it never outlasts the lease in the store, whatever the hosts' clocks say).

Fencing reaches every act for a space:

- the store: ``check`` (the store's fence) refuses a write for a space not held
  here under the epoch the store has, in the write's own transaction (Fenced);
- the cloud: ``guard`` refuses a cloud call for a space whose local deadline
  has passed (LeaseLost), before the call, so a manager that was paused for
  longer than its lease makes no call for what it lost. A create's name,
  request id and client token come from the intent the executor wrote under
  the lease before calling, so a call already on the wire when the lease
  lapsed can only make the machine of that intent, which the next holder
  adopts, never a second one.

SIGTERM: the spaces not being cycled are handed on at once; a cycle in progress
ends at its next cloud call (HandedOn: calls already on the wire finish and
their outcomes are written under the lease, none more is made) and its space
is handed on then. A manager that stops renewing (killed, paused, cut off from
the store) loses its spaces when their leases expire, and the others take
them over within ``lease_seconds`` and one round.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection

from vcycle.core import leases
from vcycle.core.sections import Settings
from vcycle.errors import Fenced, HandedOn, LeaseLost, StoreError
from vcycle.store import Store
from vcycle.store.leases import LeaseTable, Listener

log = logging.getLogger(__name__)
ROUND_SECONDS = 0.5  # how often a manager looks for spaces to claim or hand on
LISTEN_SECONDS = 1.0  # how long one wait for news of leases given up lasts (it ends at once when news comes)


def holder_name(settings: Settings) -> str:
    """This process's name in the leases: MANAGER_NAME@HOST:PID."""
    return f"{settings.manager_name}@{socket.gethostname()}:{os.getpid()}"


class Holder:
    """The spaces this manager holds, kept by a thread; the store's fence and the cloud calls' guard."""

    def __init__(self, store: Store, spaces: Iterable[str], settings: Settings, *, member: bool = True,
                 name: str | None = None, wake: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, database_clock: Callable[[], float] | None = None,
                 round_seconds: float = ROUND_SECONDS) -> None:
        self.name = name or holder_name(settings)
        # alive: beaten every round; silent for lease_renew_seconds, a manager is left out of the spread (so that
        # no space is handed to it), well before its leases expire
        self.table = LeaseTable(store, self.name, settings.lease_seconds, database_clock,
                                alive_seconds=max(settings.lease_renew_seconds, 3 * round_seconds))
        self.spaces: Sequence[str] = sorted(spaces)
        self.seconds = settings.lease_seconds
        self.renew_seconds = settings.lease_renew_seconds
        self.margin = min(1.0, settings.lease_seconds / 10)
        self.member = member  # False: a cron run, which takes only free spaces and is no part of the spread
        self.wake = wake
        self.monotonic = monotonic
        self.round_seconds = round_seconds
        self.held: dict[str, tuple[int, float]] = {}  # space -> (epoch, local deadline)
        self.busy: set[str] = set()
        self.leaving = False
        self.claimed = 0  # claims made by this manager, for the log and metrics
        self._lock = threading.Lock()
        self._renewed = -float("inf")
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_down = False
        self._listener: Listener | None = None
        self._left = False  # its row in the managers table removed (it is leaving)

    # --- the thread -------------------------------------------------------------------------

    def start(self) -> Holder:
        """Join the managers and take a first share now, then keep it in a thread; another hears at once when
        a manager gives leases up."""
        self.round()
        self._thread = threading.Thread(target=self._run, name="vcycle-leases", daemon=True)
        self._thread.start()
        if self.member:
            self._listener = Listener(self.table.store, self.name)
            threading.Thread(target=self._listen, name="vcycle-lease-news", daemon=True).start()
        return self

    def _listen(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while not self._stop.is_set():
                if listener.wait(LISTEN_SECONDS):
                    self._nudge.set()  # a round now: the spaces given up are claimed without waiting for it
        finally:
            listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._nudge.wait(self.round_seconds)
            self._nudge.clear()
            if not self._stop.is_set():
                self.round()

    def round(self) -> None:
        """One look: hand on and claim, then renew when due (a space handed on is claimed without waiting for a
        renewal first); a store that cannot be reached changes nothing here (the leases lapse on their own, and this
        manager stops acting for them at its local deadlines)."""
        started = self.monotonic()
        try:
            with self._lock:
                leaving = self.leaving
            now, found, live = self.table.look(beat=self.member and not leaving)
            with self._lock:
                busy = set(self.busy)
            if self.member:
                steps = leases.steps(self.name, self.spaces, found, live, now, renew_due=False, busy=busy,
                                     leaving=leaving)
                claims, releases = dict(steps.claim), dict(steps.release)
            else:
                claims = {s: "free, for one cron run" for s in self.spaces
                          if not leaving and (s not in found or not found[s].live(now))}
                releases = {s: "the cron run is over" for s in self.held if leaving and s not in busy}
            # a stopping manager leaves the spread at once, with the spaces it gives up now: the others take its
            # spaces as it gives them up, not when it exits
            leave = leaving and self.member and not self._left
            self._release(releases, leave=leave)
            self._left = self._left or leave
            self._claim(claims, started)
            if started - self._renewed >= self.renew_seconds:
                self._renew(started, beat=self.member and not leaving)
            if self._store_down:
                log.info("leases: the store answers again")
                self._store_down = False
        except StoreError as exc:
            if not self._store_down:
                log.error("leases not renewed, the store cannot be reached (spaces are left as their leases "
                          "lapse): %s", exc)
                self._store_down = True
        self._drop_lapsed()

    def _renew(self, started: float, beat: bool) -> None:
        _, held = self.table.renew(beat=beat)
        self._renewed = started
        deadline = started + self.seconds - self.margin
        with self._lock:
            for space in list(self.held):
                if space not in held:
                    log.warning("space=%s lease lost: the store no longer has it held by %s (epoch %d)", space,
                                self.name, self.held[space][0])
                    del self.held[space]
            for space, lease in held.items():
                if space in self.spaces:
                    self.held[space] = (lease.epoch, deadline)

    def _claim(self, claims: dict[str, str], started: float) -> None:
        got = self.table.claim(claims)  # one transaction, however many spaces a round claims
        if not got:
            return
        with self._lock:
            for space, lease in got.items():
                self.held[space] = (lease.epoch, started + self.seconds - self.margin)
        self.claimed += len(got)
        for space, lease in got.items():
            log.info("space=%s lease claimed by %s (epoch %d): %s", space, self.name, lease.epoch, claims[space])
        if self.wake is not None:
            self.wake()

    def _release(self, releases: dict[str, str], *, leave: bool = False) -> None:
        """Give up ``releases`` (space -> why), one transaction for all: the store hears once, and the others at
        once; ``leave``: this manager leaves the managers alive in the same transaction."""
        if not releases and not leave:
            return
        with self._lock:
            for space in list(releases):
                if space in self.busy:  # its cycle began since this round looked: handed on after it
                    del releases[space]
                    continue
                self.held.pop(space, None)  # no act for it from now on, even before the store hears
        self.table.release(releases, leave=leave)
        for space, why in releases.items():
            log.info("space=%s lease released by %s: %s", space, self.name, why)

    def _drop_lapsed(self) -> None:
        now = self.monotonic()
        with self._lock:
            for space, (epoch, deadline) in list(self.held.items()):
                if now >= deadline:
                    log.warning("space=%s lease lapsed here (epoch %d): not renewed in time; no more acts for it",
                                space, epoch)
                    del self.held[space]

    def stopping(self) -> None:
        """Hand every space on: the ones not being cycled at once, the others as their cycle ends. Safe in a
        signal handler (it takes no lock the interrupted code may hold)."""
        self.leaving = True
        self._nudge.set()

    def close(self) -> None:
        """Stop the thread, release every space held and leave the managers."""
        self._stop.set()
        self._nudge.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self.leaving = True
            held, self.held = list(self.held), {}
        try:
            why = "stopping: handed on" if self.member else "the cron run is over"
            self.table.release(dict.fromkeys(held, why), leave=self.member)
            for space in held:
                log.info("space=%s lease released by %s: %s", space, self.name, why)
        except StoreError as exc:
            log.error("leases not released (they lapse in %gs): %s", self.seconds, exc)

    # --- what the cycle asks ---------------------------------------------------------------

    def holding(self) -> list[str]:
        """The spaces held now, in order."""
        now = self.monotonic()
        with self._lock:
            return [s for s in self.spaces if s in self.held and now < self.held[s][1]]

    def holds(self, space: str) -> bool:
        with self._lock:
            found = self.held.get(space)
        return found is not None and self.monotonic() < found[1]

    @contextmanager
    def cycling(self, spaces: Iterable[str]) -> Iterator[bool]:
        """While these spaces are cycled, they are not handed on; it gives whether they are all held as the
        cycle begins (one handed on since the cycle's list was taken is not cycled)."""
        spaces = set(spaces)
        with self._lock:
            self.busy |= spaces
            now = self.monotonic()
            held = all(s in self.held and now < self.held[s][1] for s in spaces)
        try:
            yield held
        finally:
            with self._lock:
                self.busy -= spaces
            if self.leaving:  # stopping: the holder's round hands the space on now
                self._nudge.set()

    def handing_on(self) -> bool:
        """Whether this manager is stopping and hands its spaces on: a cycle in progress leaves what can wait
        (accounting, housekeeping) to the next holder."""
        return self.leaving and self.member

    def guard(self, space: str) -> None:
        """Before each cloud call for ``space``: LeaseLost unless it is held here, by the local deadline;
        HandedOn once this manager is leaving (a cycle in progress ends at its next call, and the space is handed
        on then, not when the whole cycle would have ended)."""
        with self._lock:
            found = self.held.get(space)
        if self.handing_on():
            raise HandedOn(f"space {space}: this manager ({self.name}) is stopping and hands the space on; no cloud "
                           "call made")
        if found is None or self.monotonic() >= found[1]:
            raise LeaseLost(f"space {space}: this manager ({self.name}) no longer holds its lease; no cloud call "
                            "made")

    def check(self, connection: Connection, space: str) -> None:
        """The store's fence: Fenced unless the store has ``space`` held by this manager under our epoch."""
        with self._lock:
            found = self.held.get(space)
        if found is None or self.monotonic() >= found[1]:
            raise Fenced(f"space {space}: this manager ({self.name}) no longer holds its lease; nothing written")
        if not self.table.verify(connection, space, found[0]):
            with self._lock:
                if self.held.get(space) == found:
                    del self.held[space]
            raise Fenced(f"space {space}: the lease of epoch {found[0]} is no longer {self.name}'s in the store; "
                         "nothing written")
