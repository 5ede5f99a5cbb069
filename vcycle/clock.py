"""The one real clock, and the shape every injected clock has.

Code that needs the time takes a ``Clock``; the daemon passes ``utc_now``,
tests pass a ``vcycle.testing.FakeClock``. The pure core takes ``now`` as a
value instead and never imports this.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)
