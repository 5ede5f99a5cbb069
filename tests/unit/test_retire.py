"""Register timeouts, drains and retirement of machines running batch daemons (vcycle/core/retire.py through the
planner), and sync keeping when each machine's daemon registered and since when it is idle."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta

from vctest import T0, make_config, rec

from vcycle.core.model import Action, Demand, JobShape, Plan, SpaceSnapshot, StatusChange
from vcycle.core.planner import plan
from vcycle.core.states import MachineState
from vcycle.core.sync import sync

S = MachineState
NOW = T0 + timedelta(hours=2)
Q = "[demand q]\ntype = file\npath = /dev/null\n"
BATCH = {"demand": "q", "min_processors": 4, "retire_idle_seconds": 600, "retire_timeout_seconds": 1800,
         "register_timeout_seconds": 900}


def run(records, registered: Mapping[str, bool] | None, demand: Demand | None = None,  # type: ignore[no-untyped-def]
        draining: frozenset[str] = frozenset(), **keys: object) -> Plan:
    config = make_config(limit=1000, machinetypes={"mt": {**BATCH, **keys}}, extra=Q,
                         settings={"max_create_fraction": 0})
    wanted = {"mt": demand} if demand is not None else {}
    return plan(SpaceSnapshot("sp", tuple(records), draining=draining, registered=registered), wanted, config, NOW)


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
