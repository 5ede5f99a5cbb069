"""Transient answers asked again at once, within the call's own time, with full jitter.

A create or delete the cloud answered with a plain CloudUnavailable (a 5xx, a
reset connection, a timeout: the transient class, after the SDK's own retries)
is made again under the same name and request id, which every connector's
create is idempotent on (a retried create returns the machine the first one
made), and a delete again by the same cloud id (an absent machine is success).
The waits are AWS's "full jitter": uniform between 0 and ``base * 2**n``
seconds, ``cap`` at most, so that the creates of a burst that failed together
do not all come back together. No wait runs past the call's deadline (the
space's api_timeout_seconds from its start): what is still failing then is left
to the next sync, as before. The space's own answers (Throttled, Unauthorized)
and everything that surely made nothing for a reason (quota, capacity, a refused
launch) are never asked again here: their classes decide (vcycle/errors.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from vcycle.errors import CloudUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    """How often and how soon a transient answer is asked again."""

    attempts: int = 3  # tries in all
    base_seconds: float = 0.25  # the first wait is at most this, doubling with each try
    cap_seconds: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def call(self, fn: Callable[[], T], *, what: str, deadline: float) -> T:
        """``fn()``, asked again after a transient CloudUnavailable while tries and time (``deadline``, on
        ``clock``) are left; its last error raised when they are not."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except CloudUnavailable as exc:
                if type(exc) is not CloudUnavailable or attempt == self.attempts:
                    raise
                wait = self.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))
                if self.clock() + wait >= deadline:
                    raise
                log.warning("%s: transient answer (%s), asked again in %.2fs (try %d of %d)", what, exc, wait,
                            attempt + 1, self.attempts)
                self.sleep(wait)
        raise AssertionError("unreachable")  # the last try returned or raised
