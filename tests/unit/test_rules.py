"""Small rules, table by table."""

from __future__ import annotations

import pytest
from vctest import make_config

from vcycle import rules


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
