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
