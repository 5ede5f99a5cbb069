"""Register timeouts, drains and retirement of machines running batch daemons (vcycle/core/retire.py through the
planner), and sync keeping when each machine's daemon registered and since when it is idle."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vctest import T0, make_config, rec

from vcycle.core.model import Action, Demand, JobShape, Plan, SpaceSnapshot, StatusChange
from vcycle.core.options import Budget
from vcycle.core.planner import plan
from vcycle.core.states import MachineState
from vcycle.core.sync import sync
from vcycle.errors import ConfigError

S = MachineState
NOW = T0 + timedelta(hours=2)
Q = "[demand q]\ntype = file\npath = /dev/null\n"
BATCH = {"demand": "q", "min_processors": 4, "retire_idle_seconds": 600, "retire_timeout_seconds": 1800,
         "register_timeout_seconds": 900}


def run(records, registered: Mapping[str, bool] | None, demand: Demand | None = None,  # type: ignore[no-untyped-def]
        draining: frozenset[str] = frozenset(), space: Mapping[str, object] | None = None,
        recent_idle: Mapping[str, tuple[int, ...]] | None = None, **keys: object) -> Plan:
    """The plan, with no disruption budget unless one is given (the budget's own tests give one)."""
    config = make_config(limit=1000, machinetypes={"mt": {**BATCH, "max_disrupting": "100%", **keys}}, extra=Q,
                         settings={"max_create_fraction": 0}, space={"max_disrupting": "100%", **(space or {})})
    wanted = {"mt": demand} if demand is not None else {}
    snapshot = SpaceSnapshot("sp", tuple(records), draining=draining, registered=registered,
                             recent_idle=recent_idle or {})
    return plan(snapshot, wanted, config, NOW)


def running(name: str, *, idle_for: int | None = None, registered: bool = True, up: int = 3600):  # type: ignore[no-untyped-def]
    return rec(name, S.RUNNING, processors=4, started_at=NOW - timedelta(seconds=up),
               registered_at=NOW - timedelta(seconds=up - 60) if registered else None,
               idle_since=NOW - timedelta(seconds=idle_for) if idle_for is not None else None)


def test_a_machine_whose_startd_never_joins_is_deleted_as_an_abort() -> None:
    late = running("late", registered=False, up=1000)
    young = running("young", registered=False, up=300)
    gone = running("gone", up=5000)  # registered once, now missing: not a register timeout
    result = run([late, young, gone], registered={})
    (order,) = result.deletes
    assert (order.machine, order.code, order.message) == ("late", 500, "Batch daemon did not register")
    assert "has not registered 1000s after the machine started (register_timeout_seconds 900)" in order.reason


def test_idle_machines_beyond_what_the_idle_jobs_fill_are_drained_longest_idle_first() -> None:
    machines = [running("a", idle_for=3000), running("b", idle_for=1200), running("c", idle_for=100),
                running("d"), running("e", idle_for=700)]
    registered = {"a": False, "b": False, "c": False, "d": True, "e": False}
    one_machine_of_work = Demand(idle_jobs=3, shapes=(JobShape(1, 1000, 0, 3),))
    result = run(machines, registered, one_machine_of_work)
    # 4 idle machines (a, b, c, e), the idle jobs fill 1: 3 may go; c has been idle only 100 s
    assert [d.machine for d in result.drains] == ["a", "b", "e"]
    reason = next(d.reason for d in result.decisions if d.action is Action.DRAIN and d.machine == "a")
    assert reason == ("its batch daemon has had no work for 3000s (retire_idle_seconds 600); "
                      "4 mt machines are idle and the idle jobs fill 1")
    assert run(machines, registered, Demand(idle_jobs=20, shapes=(JobShape(1, 1000, 0, 20),))).drains == ()
    assert run(machines, registered, Demand.unknown("schedd down")).drains == ()  # never on a guess
    assert run(machines, registered, one_machine_of_work, retire_idle_seconds=0).drains == ()


def test_an_operator_drain_drains_every_registered_machine() -> None:
    machines = [running("a", idle_for=10), running("d"), running("x", registered=False, up=60)]
    result = run(machines, {"a": False, "d": True}, Demand(idle_jobs=0), draining=frozenset({"mt"}))
    assert sorted(d.machine for d in result.drains) == ["a", "d"]
    assert all("drained by an operator" in d.reason for d in result.drains)


def test_a_draining_machine_is_deleted_when_its_startd_leaves_or_the_drain_times_out() -> None:
    def draining(name: str, seconds: int):  # type: ignore[no-untyped-def]
        since = StatusChange(S.DRAINING, NOW - timedelta(seconds=seconds), "drain")
        return dataclasses.replace(rec(name, S.DRAINING, processors=4, started_at=T0), last=since)

    left, slow, fine = draining("left", 60), draining("slow", 2000), draining("fine", 60)
    result = run([left, slow, fine], {"slow": True, "fine": True})
    orders = {d.machine: d for d in result.deletes}
    assert set(orders) == {"left", "slow"}
    assert (orders["left"].code, orders["left"].message) == (100, "Shutdown as requested: drained")
    assert "still draining after 2000s (retire_timeout_seconds 1800)" in orders["slow"].reason


def test_nothing_is_decided_without_word_from_the_batch_system() -> None:
    machines = [running("late", registered=False, up=5000), running("a", idle_for=9000)]
    result = run(machines, None, Demand(idle_jobs=0))
    assert result.deletes == () and result.drains == ()


def test_sync_keeps_when_the_startd_registered_and_since_when_it_is_idle() -> None:
    from vctest import cloud

    from vcycle.core.model import CloudStatus

    config = make_config(machinetypes={"mt": {**BATCH}}, extra=Q)
    space, settings = config.spaces["sp"], config.settings
    record = rec("m", S.RUNNING, processors=4, cloud_id="id-m")
    listing = [cloud("m", CloudStatus.RUNNING, processors=4)]

    def step(registered: Mapping[str, bool] | None, at: int):  # type: ignore[no-untyped-def]
        (out,) = sync([record], listing, {}, T0 + timedelta(seconds=at), space=space, settings=settings,
                      registered=registered).records
        return out

    record = step({}, 10)
    assert (record.registered_at, record.idle_since) == (None, None)
    record = step({"m": False}, 20)
    assert record.registered_at == T0 + timedelta(seconds=20) and record.idle_since == T0 + timedelta(seconds=20)
    record = step({"m": False}, 30)
    assert record.idle_since == T0 + timedelta(seconds=20)  # still idle since then
    record = step({"m": True}, 40)
    assert record.idle_since is None and record.registered_at == T0 + timedelta(seconds=20)
    record = step(None, 50)  # the batch system did not answer: nothing changes
    assert record.idle_since is None and record.registered_at == T0 + timedelta(seconds=20)


def _idle_fleet(count: int, draining: int = 0) -> tuple[list[object], dict[str, bool]]:
    machines: list[object] = [running(f"i{n:02d}", idle_for=3000 + n) for n in range(count)]
    since = StatusChange(S.DRAINING, NOW - timedelta(seconds=60), "drain")
    machines += [dataclasses.replace(rec(f"d{n:02d}", S.DRAINING, processors=4, started_at=T0), last=since)
                 for n in range(draining)]
    return machines, {m.name: False for m in machines}  # type: ignore[attr-defined]


NO_WORK = Demand(idle_jobs=0, shapes=())


def test_the_disruption_budget_limits_how_many_machines_retire_at_once() -> None:
    machines, registered = _idle_fleet(20)
    result = run(machines, registered, NO_WORK, max_disrupting="10%")
    assert [d.machine for d in result.drains] == ["i19", "i18"]  # 10 % of 20, the longest idle first
    (hold,) = [d for d in result.decisions if d.rule == "disruption_budget"]
    assert hold.reason.startswith("disruption budget: 2 of 20 mt machines retiring (max_disrupting 10%)")
    assert hold.reason.endswith("18 more wait")
    machines, registered = _idle_fleet(18, draining=2)  # those already retiring count
    assert run(machines, registered, NO_WORK, max_disrupting="10%").drains == ()
    machines, registered = _idle_fleet(20)
    assert len(run(machines, registered, NO_WORK, max_disrupting="3").drains) == 3
    assert len(run(machines, registered, NO_WORK, space={"max_disrupting": "1"}).drains) == 1  # the space's
    assert run(machines, registered, NO_WORK, max_disrupting="0").drains == ()
    # an operator's drain of the machinetype is budgeted too; 10 % of 5 rounds up to one machine
    machines, registered = _idle_fleet(5)
    drained = run(machines, registered, Demand(idle_jobs=50), draining=frozenset({"mt"}), max_disrupting="10%")
    assert len(drained.drains) == 1


@pytest.mark.parametrize("value", ["110%", "-1", "ten", "5.5", "%"])
def test_a_bad_disruption_budget_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(machinetypes={"mt": {"max_disrupting": value}})
    assert "max_disrupting" in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(idle=st.integers(0, 40), draining=st.integers(0, 10), budget=st.one_of(
    st.integers(0, 50).map(str), st.integers(0, 100).map(lambda p: f"{p}%")))
def test_new_drains_never_take_the_retiring_machines_beyond_the_budget(idle: int, draining: int, budget: str) -> None:
    machines, registered = _idle_fleet(idle, draining)
    result = run(machines, registered, NO_WORK, max_disrupting=budget)
    cap = Budget(count=int(budget)) if not budget.endswith("%") else Budget(percent=float(budget[:-1]))
    allowed = max(0, cap.of(idle + draining) - draining)
    assert len(result.drains) == min(idle, allowed)


def test_no_idle_machine_retires_just_after_a_create_or_a_steep_fall_in_idle_jobs() -> None:
    machines, registered = _idle_fleet(4)
    young = rec("new", S.STARTING, processors=4, created=NOW - timedelta(seconds=300))
    result = run([*machines, young], registered, NO_WORK)
    assert result.drains == ()
    (hold,) = [d for d in result.decisions if d.rule == "retire_settle"]
    assert "its last machine was created 300s ago (retire_after_create_seconds 600)" in hold.reason
    assert len(run([*machines, young], registered, NO_WORK, retire_after_create_seconds=0).drains) == 4
    fell = run(machines, registered, Demand(idle_jobs=1, shapes=(JobShape(1, 1000, 0, 1),)), recent_idle={
        "mt": (40, 30, 2)})
    assert fell.drains == () and any("fell from 40 to 1 within the last 3 cycles" in d.reason
                                     for d in fell.decisions if d.rule == "retire_settle")
    lasted = run(machines, registered, Demand(idle_jobs=1, shapes=(JobShape(1, 1000, 0, 1),)), recent_idle={
        "mt": (40, 2, 1, 1)})  # the fall is four cycles old: it lasted retire_wait_cycles (3)
    assert len(lasted.drains) == 3
    assert run(machines, registered, Demand.unknown("schedd down"), recent_idle={"mt": (0, 0, 0)}).drains == ()
