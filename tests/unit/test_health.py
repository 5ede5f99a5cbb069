"""Launch health, table by table: which changes tell a launch's outcome (once per machine), when a machinetype is
unhealthy, and when its next probe is due."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from vctest import T0, make_config, rec

from vcycle.core import health
from vcycle.core.model import LaunchOutcome, StatusChange
from vcycle.core.states import MachineState

S = MachineState
MT = make_config(machinetypes={"mt": {"heartbeat_file": "vm-heartbeat"}}).spaces["sp"].machinetypes["mt"]
PLAIN = make_config().spaces["sp"].machinetypes["mt"]


def moved(state: S, reason: str = "test", **extra: object):  # type: ignore[no-untyped-def]
    record = rec("m", state, **extra)
    return dataclasses.replace(record, last=StatusChange(state, T0 + timedelta(seconds=5), reason))


@pytest.mark.parametrize(("before", "after", "batch", "told"), [
    # reached work: a heartbeat, a registration, or (neither expected) running
    (rec("m", S.RUNNING), moved(S.RUNNING, heartbeat_at=T0), False, (True, "reached work")),
    (rec("m", S.RUNNING), moved(S.RUNNING, registered_at=T0), True, (True, "reached work")),
    (None, moved(S.RUNNING, started_at=T0), False, None),  # heartbeat_file set: running is not yet work
    # failed: refused, failed in the cloud, stopped first, or a deadline
    (rec("m", S.REQUESTED), moved(S.CREATE_FAILED, "create refused (rejected): image gone"), False,
     (False, "create refused (rejected): image gone")),
    (rec("m", S.REQUESTED), moved(S.CREATE_FAILED, "no capacity on any offering (m5.large: full)"), False, None),
    (rec("m", S.STARTING), moved(S.FAILED, "cloud reports ERROR"), False,
     (False, "failed in the cloud before it reached work (cloud reports ERROR)")),
    (rec("m", S.RUNNING), moved(S.STOPPED, shutdown_code=500, shutdown_text="Pilot failed"), False,
     (False, "stopped before it reached work with '500 Pilot failed'")),
    (rec("m", S.STARTING), moved(S.DELETING, shutdown_code=700, shutdown_text="Failed to start"), False,
     (False, "'700 Failed to start'")),
    (rec("m", S.RUNNING), moved(S.DELETING, shutdown_code=500, shutdown_text="Batch daemon did not register"),
     True, (False, "'500 Batch daemon did not register'")),
    # not a launch outcome: an operator's delete, a wallclock, a machine that vanished
    (rec("m", S.RUNNING), moved(S.DELETING, shutdown_code=700, shutdown_text="Deleted by operator"), False, None),
    (rec("m", S.RUNNING), moved(S.GONE, "vanished"), False, None),
    # told once: a machine that reached work and then stopped; a failure that goes on to be deleted
    (rec("m", S.RUNNING, heartbeat_at=T0), moved(S.STOPPED, shutdown_code=500, shutdown_text="x"), False, None),
    (rec("m", S.STOPPED, shutdown_code=500), moved(S.DELETING, shutdown_code=500), False, None),
])
def test_a_change_tells_a_launch_outcome_once(before, after, batch, told) -> None:  # type: ignore[no-untyped-def]
    found = health.outcomes({"m": before} if before is not None else {}, [after], {"mt": MT}, batch)
    assert [(o.ok, o.reason) for o in found] == ([told] if told else [])


def test_where_neither_heartbeat_nor_batch_system_is_expected_running_is_reaching_work() -> None:
    found = health.outcomes({"m": rec("m", S.STARTING)}, [moved(S.RUNNING, started_at=T0)], {"mt": PLAIN}, False)
    assert [(o.ok, o.at) for o in found] == [(True, T0 + timedelta(seconds=5))]


def history(*oks: bool) -> tuple[LaunchOutcome, ...]:
    return tuple(LaunchOutcome("mt", f"m{i}", T0 + timedelta(seconds=i), ok, "ok" if ok else "refused")
                 for i, ok in enumerate(oks))


@pytest.mark.parametrize(("oks", "sick"), [
    ((True, True, True, True), False),
    ((True, True, False, False), True),  # 2 of the last 4, the newest among them
    ((False, True, True, False), True),
    ((False, False, True, True, True, False), False),  # only 1 failure among the last 4
    ((False, False, False, True), False),  # the newest reached work: healthy again
    ((False,), False),  # 1 failure is not 2
    ((), False),
])
def test_unhealthy_at_launch_health_failures_of_the_window_with_the_newest_failed(oks: tuple[bool, ...],
                                                                                sick: bool) -> None:
    why = health.unhealthy(history(*oks), PLAIN)
    assert (why is not None) == sick
    if why:
        assert "(launch_health_failures 2 of launch_health_window 4)" in why and "refused" in why


def test_one_probe_at_a_time_one_per_offering_cooldown_seconds() -> None:
    failed = history(False, False)
    last = failed[-1].at
    assert "the next at" in (health.probe_hold(failed, (), 0, PLAIN, False, last + timedelta(seconds=179)) or "")
    assert health.probe_hold(failed, (), 0, PLAIN, False, last + timedelta(seconds=180)) is None  # due
    assert "made this cycle" in (health.probe_hold(failed, (), 1, PLAIN, False, last + timedelta(hours=1)) or "")
    on_its_way = [rec("probe", S.STARTING)]
    assert "its probe probe is on its way" in (
        health.probe_hold(failed, on_its_way, 0, PLAIN, False, last + timedelta(hours=1)) or "")
    assert health.probe_hold(history(True), (), 0, PLAIN, False, last) is None  # healthy: no hold


def test_kept_orders_outcomes_and_keeps_the_last_twenty() -> None:
    kept = health.kept(history(*([True] * 15)), history(*([False] * 10)))
    assert len(kept) == health.KEPT and [o.at for o in kept] == sorted(o.at for o in kept)
