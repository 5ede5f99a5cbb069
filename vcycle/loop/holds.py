"""A space's own holds, kept from cycle to cycle in its context: the cloud asked vcycle to slow down (Throttled),
or refused a create because the space's quota is spent (QuotaExceeded).

A throttled space is left alone, no call at all, until its Retry-After has passed (one cycle where the cloud
names none). A spent quota holds the creates of that size or more (core/planner.py, rule ``quota``) until a
listing shows fewer processors held than when the cloud refused. Held in memory: a cron run starts afresh, and
asks the cloud at most once a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vcycle.core.model import QuotaHold
from vcycle.errors import QuotaExceeded, Throttled

log = logging.getLogger(__name__)


@dataclass
class Holds:
    """The holds of one space."""

    space: str
    slow_until: datetime | None = None
    slow_reason: str = ""
    quota: QuotaHold | None = None

    def slowed(self, now: datetime) -> str | None:
        """Why the space is left alone this cycle, or None."""
        if self.slow_until is None or now >= self.slow_until:
            return None
        return (f"throttled: the cloud asked to slow down ({self.slow_reason}); no call to it until "
                f"{self.slow_until.strftime('%H:%M:%SZ')}")

    def after(self, throttled: Throttled | None, refused: tuple[int, QuotaExceeded] | None, held: Callable[[], int],
              now: datetime, cycle_seconds: int) -> None:
        """What a cycle met: the cloud asked to slow down, or refused a create for its quota (``held()``: the
        processors the space holds after it)."""
        if throttled is not None:
            self.throttled(throttled, now, cycle_seconds)
        if refused is not None:
            self.spent(refused, held(), now)

    def throttled(self, error: Throttled, now: datetime, cycle_seconds: int) -> None:
        """The cloud answered ``error``: leave the space alone for its Retry-After, or one cycle."""
        wait = error.retry_after if error.retry_after is not None and error.retry_after > 0 else cycle_seconds
        self.slow_until = now + timedelta(seconds=wait)
        self.slow_reason = str(error)
        log.warning("space=%s throttled by the cloud, no call to it for %gs: %s", self.space, wait, error)

    def in_force(self, held: Callable[[], int]) -> QuotaHold | None:
        """The quota hold, while ``held()`` (the processors the space holds now) shows no room; it ends once fewer
        are held than when the cloud refused."""
        if self.quota is not None and (now_held := held()) < self.quota.held:
            log.info("space=%s quota hold lifted: %d processors held, fewer than the %d of the refusal", self.space,
                     now_held, self.quota.held)
            self.quota = None
        return self.quota

    def spent(self, refused: tuple[int, QuotaExceeded], held: int, now: datetime) -> None:
        """The cloud refused a create of ``refused[0]`` processors for its quota while ``held`` were held."""
        processors, error = refused
        self.quota = QuotaHold(processors, held, now, str(error))
        log.warning("space=%s quota spent at %d processors held: no create of %d or more until fewer are held: %s",
                    self.space, held, processors, error)
