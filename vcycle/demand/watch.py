"""Watching a demand source between cycles: a thread asks every ``seconds`` and says which counts rose.

The daemon gives a source's watch its wake-up (``on_change``), so that new
work starts a cycle at once instead of waiting up to ``cycle_seconds``. A
failing look is skipped quietly: the next cycle asks again and reports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping

from vcycle.errors import DemandError, StoreError

log = logging.getLogger(__name__)


class Watch:
    """Calls ``count()`` every ``seconds``; when counts rose since the look before, logs which and calls
    ``on_change`` (the daemon sets it to its wake-up)."""

    def __init__(self, name: str, seconds: float, count: Callable[[], Mapping[Hashable, int]], what: str) -> None:
        self.name, self.seconds, self.count, self.what = name, seconds, count, what
        self.on_change: Callable[[], None] | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching, if someone is to be woken; idempotent."""
        if self.thread is None and self.on_change is not None and not self.stopping.is_set():
            self.thread = threading.Thread(target=self._run, daemon=True, name=f"vcycle-watch-{self.name}")
            self.thread.start()

    def _run(self) -> None:
        seen: Mapping[Hashable, int] = {}
        while not self.stopping.wait(self.seconds):
            try:
                now = self.count()
            except (DemandError, StoreError) as exc:
                log.debug("demand=%s not watched this time: %s", self.name, exc)
                continue
            risen = sorted((key for key, n in now.items() if n > seen.get(key, 0)), key=str)
            seen = now
            if risen:
                log.info("demand=%s %s rose for %s: cycle now", self.name, self.what,
                         " ".join("/".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in risen))
                if self.on_change is not None:
                    self.on_change()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
