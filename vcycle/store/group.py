"""Group commit: writes that arrive while another one commits wait, and the first of them commits them together.

Each space's cycle runs in a thread of its own and writes its intent before any
cloud call (vcycle/loop/executor.py). When a hundred listings come back in the
same tenth of a second, a hundred writes queue for SQLite's one writer; made
one after another, each pays its own transaction, lock and connection. Here
the writer at the front of the queue leads: it opens one transaction, takes
every write queued by then (up to ``limit`` writes, and ``rows`` rows as
``size`` counts them), and commits them all, while the others sleep on an
event of their own (not on a shared condition, which would wake them all).
Then it wakes them, and the next write at the front, if any, leads the next
group. A write that arrives when nothing is queued leads at once
and commits alone, as before.

What goes into the transaction, and what a write that fails in it does to the
others, is the committer's business (Store.write); this module only orders the
writers. Each write's outcome (its new version, or its error) is returned or
raised in its own thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

R = TypeVar("R")
LIMIT = 200  # writes in one transaction at most: a group's transaction stays short
ROWS = 2000  # and rows, as ``size`` counts them: a group of large writes is committed as a few


@dataclass(eq=False)
class Entry(Generic[R]):
    """One write waiting in the queue, and what became of it."""

    request: R
    turn: threading.Event | None = None  # set when it is done, or at the front of the queue (then it leads)
    version: int | None = None  # the space's new version, once committed
    error: BaseException | None = None  # what refused it or failed it
    done: bool = False


class Group(Generic[R]):
    """Writers queue here; the one at the front commits the queue's first ``limit`` together."""

    def __init__(self, limit: int = LIMIT, size: Callable[[R], int] | None = None, rows: int = ROWS) -> None:
        self.limit = max(1, limit)
        self.size = size  # the rows a write brings (None: one each)
        self.rows = rows
        self._lock = threading.Lock()
        self._queue: collections.deque[Entry[R]] = collections.deque()

    @property
    def queued(self) -> int:
        """Writes waiting or being committed now."""
        with self._lock:
            return len(self._queue)

    def run(self, request: R, commit: Callable[[Callable[[], list[Entry[R]]]], None]) -> int:
        """Commit ``request``, alone or with the writes queued with it; its new version, or its error raised.

        ``commit(take)`` is called in the leading thread: it opens a transaction, calls ``take()`` once for
        the group (the leader's own entry first), and sets every entry's ``version`` or ``error``. An error it
        raises is the leader's own; entries it took and left without an outcome fail with it too."""
        entry: Entry[R] = Entry(request)
        with self._lock:
            self._queue.append(entry)
            if len(self._queue) > 1:
                entry.turn = threading.Event()
        if entry.turn is not None:
            entry.turn.wait()
        if not entry.done:
            self._lead(entry, commit)
        if entry.error is not None:
            raise entry.error
        assert entry.version is not None
        return entry.version

    def _lead(self, entry: Entry[R], commit: Callable[[Callable[[], list[Entry[R]]]], None]) -> None:
        taken: list[Entry[R]] = []

        def take() -> list[Entry[R]]:
            rows = 0
            with self._lock:
                for each in islice(self._queue, self.limit):
                    rows += self.size(each.request) if self.size is not None else 1
                    if taken and rows > self.rows:
                        break
                    taken.append(each)
            return list(taken)

        try:
            commit(take)
        except BaseException as exc:  # noqa: BLE001 - the leader's own error, and the group's it took and left
            for each in taken or [entry]:
                if each.version is None and each.error is None:
                    each.error = exc
        finally:
            with self._lock:
                group = taken or [entry]  # the queue's front, in order, the leader first
                for each in group:
                    self._queue.popleft()
                    each.done = True
                    if each.turn is not None and each is not entry:
                        each.turn.set()
                if self._queue:  # the next front leads the next group
                    front = self._queue[0].turn
                    assert front is not None  # it queued behind another, so it waits on a turn
                    front.set()
