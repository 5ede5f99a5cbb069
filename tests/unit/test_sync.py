"""Sync folds what the cloud and the machines report into the records, with reasons."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vctest import T0, cloud, make_config, rec

from vcycle.core import rules
from vcycle.core.model import Backoff, CloudStatus, Heartbeat
from vcycle.core.states import MachineState
from vcycle.core.sync import sync

S = MachineState
C = CloudStatus
CONFIG = make_config(machinetypes={"mt": {"fizzle_seconds": 300, "max_wallclock_seconds": 3600}})
LATER = T0 + timedelta(seconds=1000)


def run(records, machines, now=LATER, heartbeats=None, backoffs=None):  # type: ignore[no-untyped-def]
    return sync(records, machines, heartbeats or {}, now, space=CONFIG.spaces["sp"], settings=CONFIG.settings,
                backoffs=backoffs)


def only(result):  # type: ignore[no-untyped-def]
    (record,) = result.records
    return record


@pytest.mark.parametrize(("before", "status", "after"), [
    (S.REQUESTED, C.STARTING, S.STARTING),
    (S.REQUESTED, C.RUNNING, S.RUNNING),
    (S.REQUESTED, C.FAILED, S.FAILED),
    (S.REQUESTED, C.STOPPED, S.STOPPED),
    (S.STARTING, C.RUNNING, S.RUNNING),
    (S.STARTING, C.FAILED, S.FAILED),
    (S.STARTING, C.STOPPED, S.STOPPED),
    (S.RUNNING, C.STOPPED, S.STOPPED),
    (S.RUNNING, C.FAILED, S.FAILED),
    (S.DRAINING, C.STOPPED, S.STOPPED),
    (S.STOPPED, C.FAILED, S.FAILED),
    (S.CREATE_FAILED, C.RUNNING, S.RUNNING),
    (S.RUNNING, C.UNKNOWN, S.RUNNING),
    (S.RUNNING, C.DELETING, S.RUNNING),
    (S.DRAINING, C.RUNNING, S.DRAINING),
    (S.STOPPED, C.RUNNING, S.STOPPED),
])
def test_listed_machine_moves_as_the_cloud_reports(before: S, status: C, after: S) -> None:
    result = run([rec("m", before)], [cloud("m", status)])
    record = only(result)
    assert record.state is after
    if after is not before:
        assert record.last.reason.startswith(f"cloud reports {status.value}")
        assert result.changes == (("m", record.last),)
    else:
        assert result.changes == ()


@pytest.mark.parametrize("before", [S.STARTING, S.RUNNING, S.DRAINING, S.STOPPED, S.FAILED, S.DELETING,
                                    S.DELETE_FAILED])
def test_vanished_machine_is_gone(before: S) -> None:
    result = run([rec("m", before)], [])
    record = only(result)
    assert record.state is S.GONE
    if before in (S.STARTING, S.RUNNING, S.DRAINING):  # alive, and vcycle sent no delete
        assert record.last.reason.startswith("vanished from the cloud's listing without a delete from vcycle")
        assert result.vanished == ("m",)
    else:
        assert record.last.reason == "no longer listed by the cloud"
        assert result.vanished == ()


def test_nova_deleted_flash_is_read_as_not_listed_and_never_adopted() -> None:
    result = run([rec("m", S.DELETING)], [cloud("m", C.DELETED), cloud("ghost", C.DELETED)])
    assert [r.name for r in result.records] == ["m"]
    assert only(result).state is S.GONE


def test_gone_records_are_left_alone() -> None:
    record = rec("m", S.GONE)
    assert only(run([record], [])) is record


def test_requested_machine_waits_then_times_out() -> None:
    settings_timeout = CONFIG.settings.request_timeout_seconds
    young = run([rec("m", S.REQUESTED)], [], now=T0 + timedelta(seconds=settings_timeout - 1))
    assert only(young).state is S.REQUESTED
    old = only(run([rec("m", S.REQUESTED)], [], now=T0 + timedelta(seconds=settings_timeout + 1)))
    assert old.state is S.CREATE_FAILED
    assert "not listed by the cloud" in old.last.reason


def test_tagged_machine_unknown_to_the_store_is_adopted() -> None:
    result = run([], [cloud("stray", C.RUNNING, processors=4)])
    record = only(result)
    assert (record.state, record.processors, record.cloud_id, record.request_id) == (S.RUNNING, 4, "id-stray",
                                                                                     "req-stray")
    assert record.reason.startswith("adopted") and record.last.cause.startswith("adopted")  # type: ignore[union-attr]
    assert record.shutdown_at == T0 + timedelta(seconds=3600)  # cloud creation time + max_wallclock_seconds
    assert result.changes[0][0] == "stray"


def test_foreign_and_other_managers_machines_count_but_are_not_adopted() -> None:
    machines = [cloud("f1", C.RUNNING, owned=False, processors=2), cloud("f2", C.RUNNING, manager="other"),
                cloud("f3", C.RUNNING, space="elsewhere", processors=None)]
    result = run([], machines)
    assert result.records == ()
    assert (result.foreign_machines, result.foreign_processors) == (3, 4)


def test_running_sets_started_at_and_stopped_sets_stopped_at() -> None:
    running = only(run([rec("m", S.STARTING)], [cloud("m", C.RUNNING)]))
    assert running.started_at == LATER
    stopped = only(run([running], [cloud("m", C.STOPPED)], now=LATER + timedelta(seconds=5000)))
    assert stopped.stopped_at == LATER + timedelta(seconds=5000)


def test_heartbeat_and_shutdown_message_are_noted() -> None:
    beat = Heartbeat("m", at=LATER, shutdown_message="300 Nothing to do")
    record = only(run([rec("m", S.RUNNING, started_at=T0)], [cloud("m", C.RUNNING)], heartbeats={"m": beat}))
    assert (record.heartbeat_at, record.shutdown_code, record.shutdown_text) == (LATER, 300, "Nothing to do")


def test_shutdown_code_300_to_699_starts_backoff() -> None:
    record = rec("m", S.RUNNING, started_at=T0, shutdown_code=500, shutdown_text="Pilot failed")
    result = run([record], [cloud("m", C.STOPPED)])
    backoff = result.backoffs["mt"]
    assert backoff.last_abort_at == LATER
    assert "500 Pilot failed" in backoff.reason


def test_success_code_after_fizzle_does_not_back_off() -> None:
    record = rec("m", S.RUNNING, started_at=T0, shutdown_code=200, shutdown_text="Success")
    assert run([record], [cloud("m", C.STOPPED)]).backoffs == {}


def test_stopping_within_fizzle_without_code_is_an_abort() -> None:
    record = rec("m", S.RUNNING, started_at=LATER - timedelta(seconds=100))
    result = run([record], [cloud("m", C.STOPPED)])
    assert "within fizzle_seconds 300" in result.backoffs["mt"].reason


def test_stopping_after_fizzle_without_code_is_not_an_abort() -> None:
    record = rec("m", S.RUNNING, started_at=LATER - timedelta(seconds=301))
    assert run([record], [cloud("m", C.STOPPED)]).backoffs == {}


def test_vanishing_soon_after_start_is_not_an_abort() -> None:
    """A machine that leaves the listing without a delete and without a word did not fail: the cloud lost it
    (or someone deleted it). Counting it as a fizzle would back off a machinetype for the cloud's fault."""
    record = rec("m", S.RUNNING, started_at=LATER - timedelta(seconds=10))
    result = run([record], [])
    assert result.backoffs == {} and result.vanished == ("m",)
    assert "not counted as an abort" in only(result).last.reason


def test_vanishing_after_an_abort_message_is_an_abort() -> None:
    record = rec("m", S.RUNNING, started_at=LATER - timedelta(seconds=10), shutdown_code=500,
                 shutdown_text="Missing requirement")
    result = run([record], [])
    assert "stopped with '500 Missing requirement'" in result.backoffs["mt"].reason and result.vanished == ()


def test_many_vanishing_at_once_are_warned_about_and_one_is_not() -> None:
    many = [rec(f"m{i}", S.RUNNING, cloud_id=f"id-m{i}") for i in range(10)]
    result = run(many, [cloud("m0", C.RUNNING)])
    assert len(result.vanished) == 9 and result.backoffs == {}
    assert result.warnings == ("9 of 10 machines vanished from the cloud at once without a delete from vcycle: "
                               "was the cloud restarted empty, or were they deleted by hand? (not counted as "
                               "aborts)",)
    one = run(many, [cloud(f"m{i}", C.RUNNING) for i in range(1, 10)])
    assert one.vanished == ("m0",) and one.warnings == ()


def test_later_abort_replaces_an_earlier_backoff_only() -> None:
    old = Backoff("mt", T0, "old abort")
    record = rec("m", S.RUNNING, started_at=LATER - timedelta(seconds=10))
    assert run([record], [cloud("m", C.STOPPED)], backoffs={"mt": old}).backoffs["mt"].last_abort_at == LATER
    future = Backoff("mt", LATER + timedelta(seconds=1), "newer")
    assert run([record], [cloud("m", C.STOPPED)], backoffs={"mt": future}).backoffs["mt"] == future


def test_delete_that_does_not_complete_becomes_delete_failed() -> None:
    timeout = CONFIG.settings.deleting_timeout_seconds
    record = rec("m", S.DELETING, created=T0)
    waiting = only(run([record], [cloud("m", C.RUNNING)], now=T0 + timedelta(seconds=timeout - 1)))
    assert waiting.state is S.DELETING
    stuck = only(run([record], [cloud("m", C.RUNNING)], now=T0 + timedelta(seconds=timeout + 1)))
    assert stuck.state is S.DELETE_FAILED and "still listed" in stuck.last.reason


def test_cloud_id_and_processors_are_learnt_from_the_listing() -> None:
    record = only(run([rec("m", S.REQUESTED, processors=1)], [cloud("m", C.STARTING, processors=8)]))
    assert (record.cloud_id, record.processors) == ("id-m", 8)


# --- recovery at the next complete listing ------------------------------------------------

BOUND = timedelta(seconds=CONFIG.spaces["sp"].api_timeout_seconds)


def listed(records, machines, listed_at):  # type: ignore[no-untyped-def]
    return sync(records, machines, {}, listed_at, space=CONFIG.spaces["sp"], settings=CONFIG.settings,
                listed_at=listed_at)


def test_intent_a_later_listing_does_not_show_is_given_up_at_once() -> None:
    """A crash between the REQUESTED record and the create (or a create that failed unseen): a listing begun
    after the create could have answered shows no such machine, so its capacity is freed now, not after
    request_timeout_seconds (900 s)."""
    intent = rec("m", S.REQUESTED)
    record = only(listed([intent], [], T0 + BOUND))
    assert record.state is S.CREATE_FAILED
    assert record.last.reason.startswith(f"not in a complete listing taken {int(BOUND.total_seconds())}s after")
    assert CONFIG.settings.request_timeout_seconds > BOUND.total_seconds()  # the old wait was longer


def test_intent_a_listing_too_soon_does_not_show_is_kept() -> None:
    assert only(listed([rec("m", S.REQUESTED)], [], T0 + BOUND - timedelta(seconds=1))).state is S.REQUESTED
    assert only(run([rec("m", S.REQUESTED)], [], now=T0 + BOUND * 2)).state is S.REQUESTED  # no listed_at: timeout


def test_intent_the_listing_shows_is_adopted() -> None:
    record = only(listed([rec("m", S.REQUESTED)], [cloud("m", C.STARTING)], T0 + BOUND * 2))
    assert record.state is S.STARTING and record.cloud_id == "id-m"


def test_interrupted_delete_is_sent_again_at_the_next_listing() -> None:
    """DELETING recorded, the delete never reached the cloud (a crash, a timeout): the machine is still listed
    alive a call's bound later, so it is marked for an immediate retry (deletes are idempotent)."""
    deleting = rec("m", S.DELETING, cloud_id="id-m", last_delete_at=T0, delete_attempts=1)
    record = only(listed([deleting], [cloud("m", C.RUNNING)], T0 + BOUND))
    assert record.state is S.DELETE_FAILED and record.last_delete_at is None
    assert "sent again" in record.last.reason
    assert rules.delete_retry_due(record, CONFIG.settings, T0 + BOUND)


def test_delete_in_progress_is_left_alone() -> None:
    deleting = rec("m", S.DELETING, cloud_id="id-m", last_delete_at=T0, delete_attempts=1)
    assert only(listed([deleting], [cloud("m", C.DELETING)], T0 + BOUND)).state is S.DELETING
    assert only(listed([deleting], [cloud("m", C.RUNNING)], T0 + BOUND / 2)).state is S.DELETING
