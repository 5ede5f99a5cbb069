"""Transient answers asked again within the call (vcycle/loop/retry.py): which classes, how long the waits are
(full jitter, doubling, capped), and never past the call's deadline."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vcycle.errors import (
    CloudUnavailable,
    ConnectorError,
    LaunchRejected,
    NoCapacity,
    QuotaExceeded,
    Throttled,
    Unauthorized,
)
from vcycle.loop.retry import Retry


class Flaky:
    """Fails with ``errors`` in turn, then answers "made"."""

    def __init__(self, *errors: ConnectorError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "made"


def retry(waits: list[float], asked: list[tuple[float, float]] | None = None, now: Callable[[], float] = lambda: 0.0,
          **keys: float) -> Retry:
    def uniform(low: float, high: float) -> float:
        if asked is not None:
            asked.append((low, high))
        return high / 2

    return Retry(sleep=waits.append, uniform=uniform, clock=now, **keys)  # type: ignore[arg-type]


def test_a_transient_answer_is_asked_again_after_a_jittered_wait_that_doubles() -> None:
    waits: list[float] = []
    asked: list[tuple[float, float]] = []
    flaky = Flaky(CloudUnavailable("503"), CloudUnavailable("reset"))
    assert retry(waits, asked).call(flaky, what="create", deadline=60) == "made"
    assert flaky.calls == 3 and asked == [(0.0, 0.25), (0.0, 0.5)] and waits == [0.125, 0.25]


def test_the_wait_is_capped_and_the_last_error_raised_when_the_tries_are_spent() -> None:
    waits: list[float] = []
    asked: list[tuple[float, float]] = []
    flaky = Flaky(*(CloudUnavailable(f"503 #{i}") for i in range(5)))
    with pytest.raises(CloudUnavailable, match="503 #4"):
        retry(waits, asked, attempts=5, base_seconds=1.0, cap_seconds=3.0).call(flaky, what="create", deadline=60)
    assert flaky.calls == 5 and [high for _, high in asked] == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("error", [Throttled("slow down", 30), Unauthorized("AuthFailure"),
                                   QuotaExceeded("InstanceLimitExceeded"), NoCapacity("InsufficientInstanceCapacity"),
                                   LaunchRejected("InvalidAMIID.NotFound")],
                         ids=lambda e: type(e).__name__)
def test_the_other_classes_are_never_asked_again_here(error: ConnectorError) -> None:
    waits: list[float] = []
    flaky = Flaky(error)
    with pytest.raises(type(error)):
        retry(waits).call(flaky, what="create", deadline=60)
    assert flaky.calls == 1 and waits == []


def test_no_wait_runs_past_the_deadline() -> None:
    waits: list[float] = []
    flaky = Flaky(CloudUnavailable("timeout"))
    with pytest.raises(CloudUnavailable, match="timeout"):
        retry(waits, now=lambda: 59.9).call(flaky, what="create", deadline=60)
    assert flaky.calls == 1 and waits == []


def test_real_jitter_spreads_the_waits_of_a_burst() -> None:
    """The default draws: waits of creates that failed together differ, within [0, base]."""
    waits: list[float] = []
    policy = Retry(sleep=waits.append)
    for _ in range(20):
        policy.call(Flaky(CloudUnavailable("503")), what="create", deadline=float("inf"))
    assert len(set(waits)) == 20 and all(0.0 <= w <= 0.25 for w in waits)
