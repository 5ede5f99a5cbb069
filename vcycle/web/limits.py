"""Request rate per machine: a token bucket for each, refilled with time.

The caller passes the monotonic time, so the bucket is deterministic under
test. Buckets of machines not heard from for a while are dropped, so the
table stays as small as the set of machines that talk.
"""

from __future__ import annotations

import threading


class RateLimiter:
    """At most ``per_minute`` requests a minute per key, in bursts of up to ``burst``."""

    def __init__(self, per_minute: int, burst: int | None = None, idle_seconds: float = 600.0) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(10, per_minute // 10))
        self.idle_seconds = idle_seconds
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._swept = 0.0

    def allow(self, key: object, now: float) -> float:
        """0.0 if a request may go now, else the seconds until one may."""
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if now - self._swept > self.idle_seconds:
                self._sweep(now)
            return wait

    def _sweep(self, now: float) -> None:
        self._swept = now
        stale = [key for key, (_, at) in self._buckets.items() if now - at > self.idle_seconds]
        for key in stale:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
