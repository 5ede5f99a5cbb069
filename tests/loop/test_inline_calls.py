"""The simulator's executor: each call made at once in the caller's thread, its answer or error in the future."""

from __future__ import annotations

import threading

import pytest

from vcycle.errors import CloudUnavailable, QuotaExceeded
from vcycle.loop.calls import Inline, answer, settle


def test_a_call_is_made_at_once_in_the_callers_thread() -> None:
    made: list[str] = []
    pool = Inline()
    first = pool.submit(lambda: made.append(threading.current_thread().name) or "listed")
    assert made == [threading.current_thread().name]  # before anyone waits for it
    assert first.done() and answer(first, space="sp", api="fake", what="list_machines", bound=1) == "listed"


def test_an_error_reaches_whoever_waits_for_the_call() -> None:
    def refused() -> None:
        raise QuotaExceeded("quota exceeded for cores")

    call = Inline().submit(refused)
    done, late = settle([call], space="sp", api="fake", what="create", bound=1)
    assert done == {call} and not late
    with pytest.raises(QuotaExceeded, match="cores"):
        call.result()
    with pytest.raises(CloudUnavailable):
        answer(Inline().submit(_raise_unavailable), space="sp", api="fake", what="list", bound=1)


def _raise_unavailable() -> None:
    raise CloudUnavailable("down")


def test_a_call_s_own_timeout_reaches_the_caller_as_itself() -> None:
    """A call that failed with its own TimeoutError (a socket's) is answered with that error, not taken for a
    call still running."""
    def timed_out() -> None:
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError, match="read timed out"):
        answer(Inline().submit(timed_out), space="sp", api="fake", what="list", bound=1)
