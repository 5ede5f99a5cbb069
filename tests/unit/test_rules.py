"""Small rules, table by table."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vctest import make_config

from vcycle.core import rules


@pytest.mark.parametrize(("message", "expected"), [
    ("300 Nothing to do", (300, "Nothing to do")),
    ("  200 Success\n", (200, "Success")),
    ("700", (700, "")),
    ("Finished early", (None, "Finished early")),
    ("30 short code", (None, "30 short code")),
    ("", (None, "")),
])
def test_parse_shutdown_message(message: str, expected: tuple[int | None, str]) -> None:
    assert rules.parse_shutdown_message(message) == expected


@pytest.mark.parametrize(("limit", "fraction", "cap"), [
    (100, 0.1, 10), (1, 0.1, 1), (7, 0.1, 1), (11, 0.1, 2), (0, 0.1, 0), (64, 1.0, 64), (64, 0.0, 0), (30, 0.1, 3),
])
def test_creation_cap_is_the_ceiling_of_the_fraction(limit: int, fraction: float, cap: int) -> None:
    assert rules.creation_cap(limit, fraction) == cap


@pytest.mark.parametrize(("idle", "per_machine", "starting", "allowance"), [
    (0, 1, 0, 0), (1, 4, 0, 1), (9, 4, 0, 3), (9, 4, 3, 0), (9, 4, 5, -2), (8, 4, 1, 1),
])
def test_demand_allowance(idle: int, per_machine: int, starting: int, allowance: int) -> None:
    assert rules.demand_allowance(idle, per_machine, starting) == allowance


@pytest.mark.parametrize(("configured", "quota", "expected"), [
    (10, None, (10, "processors_limit")), (None, 5, (5, "cloud quota")), (10, 5, (5, "cloud quota")),
    (10, 50, (10, "processors_limit")), (None, None, (None, "")),
])
def test_space_limit(configured: int | None, quota: int | None, expected: tuple[int | None, str]) -> None:
    config = make_config(limit=configured)
    assert rules.space_limit(config.spaces["sp"], quota) == expected


# --- packing idle jobs into machines ----------------------------------------------------

def test_jobs_are_packed_first_fit_by_decreasing_size() -> None:
    from vcycle.core.model import JobShape as J

    assert rules.machines_for([], 4, 8000, 10**8) == (0, 0)
    assert rules.machines_for([J(1, 2000, 1000, 10)], 4, 8000, 10**8) == (3, 0)
    assert rules.machines_for([J(3, 1000, 0, 3), J(1, 1000, 0, 3)], 4, 8000, 10**8) == (3, 0)  # small fill gaps
    assert rules.machines_for([J(1, 100, 0, 4), J(1, 100, 10**9, 2)], 4, 8000, 10**8) == (1, 2)  # disk too big
    assert rules.machines_for([J(0, 0, 0, 5)], 4, 8000, 10**8) == (1, 0)


@given(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 16000), st.integers(0, 50), st.integers(1, 40)),
                max_size=6),
       st.integers(1, 8), st.integers(1000, 32000))
def test_packing_is_never_below_the_bound_nor_above_one_shape_at_a_time(raw, processors, memory) -> None:  # type: ignore[no-untyped-def]
    from vcycle.core.model import JobShape

    shapes = [JobShape(c, m, d, n) for c, m, d, n in raw]
    machines, too_big = rules.machines_for(shapes, processors, memory, 100)
    fitting = [s for s in shapes if s.processors <= processors and s.memory_mb <= memory and s.disk_kb <= 100]
    assert too_big == sum(s.count for s in shapes) - sum(s.count for s in fitting)
    lower = max([0] + [math.ceil(sum(getattr(s, k) * s.count for s in fitting) / cap)
                       for k, cap in (("processors", processors), ("memory_mb", memory), ("disk_kb", 100))])
    upper = sum(math.ceil(s.count / min(processors // s.processors, memory // s.memory_mb if s.memory_mb else 1 << 30,
                                        100 // s.disk_kb if s.disk_kb else 1 << 30)) for s in fitting)
    assert lower <= machines <= upper


def _mt(**keys: object):  # type: ignore[no-untyped-def]
    return make_config(machinetypes={"mt": {"backoff_seconds": 600, **keys}}).spaces["sp"].machinetypes["mt"]


@pytest.mark.parametrize(("failures", "seconds"), [(1, 600), (2, 1200), (3, 1800), (9, 1800), (0, 600)])
def test_a_hold_doubles_with_each_failure_in_a_row_up_to_max_backoff_seconds(failures: int, seconds: int) -> None:
    assert rules.hold_seconds(600, failures, _mt()) == seconds


def test_max_backoff_seconds_below_backoff_seconds_never_shortens_the_hold() -> None:
    assert rules.hold_seconds(600, 5, _mt(max_backoff_seconds=60)) == 600


@pytest.mark.parametrize(("after", "failures"), [
    (10, 2),  # another machine of the same window fails: still 2 in a row (its hold of 1200 s lasts)
    (1199, 2),
    (1200, 3),  # the first retry after the hold failed too
    (10799, 3),
    (10800, 1),  # backoff_reset_seconds without a failure: the count starts again
])
def test_failures_in_a_row_count_only_retries_after_the_hold_ended(after: int, failures: int) -> None:
    from datetime import UTC, datetime, timedelta

    from vcycle.core.model import Backoff

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    current = Backoff("mt", t0, "first", failures=2)
    found = rules.next_backoff(current, Backoff("mt", t0 + timedelta(seconds=after), "again"), _mt())
    assert (found.failures, found.reason) == (failures, "again")
    assert rules.next_backoff(found, current, _mt()) is found  # an older abort changes nothing
