"""Test helpers that are part of vcycle's public surface.

``FakeClock`` gives the time to code that asks for it, and moves only when
told. The ``fake`` api's options model lives here too, so that
configurations for simulations and tests validate like any other. Anyone
writing a connector or a simulation may use these.

No I/O, no real clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vcycle.options import ApiOptions, Option, integer, options

OPTIONS = ApiOptions(
    space=options(
        Option("quota_processors", integer(0), help="the processors quota the fake cloud reports"),
    ),
)


class FakeClock:
    """A clock that starts at ``start`` (aware UTC) and moves only by ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now
