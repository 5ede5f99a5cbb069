"""The machine's deadlines, from creation to its first job: each expiry deletes with its own shutdown code and
reason and counts as an abort; a machine slow but within its deadline is never touched; the old vcycle's
starting_timeout_seconds still sets the launch deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vctest import T0, make_config, rec

from vcycle.core import retire, timeouts
from vcycle.core.model import DeleteOrder, Demand, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.core.sections import Config
from vcycle.core.states import MachineState

S = MachineState


def deletes(config: Config, record: object, now: object, demand: dict[str, Demand] | None = None,
            registered: dict[str, bool] | None = None) -> list[DeleteOrder]:
    snapshot = SpaceSnapshot("sp", (record,), registered=registered)  # type: ignore[arg-type]
    return list(plan(snapshot, demand or {}, config, now).deletes)  # type: ignore[arg-type]


def test_every_deadline_row_that_ends_a_machine_has_a_code_and_counts_as_an_abort() -> None:
    ending = [row for row in timeouts.TIMEOUTS if row.code is not None and row is not timeouts.DRAINING]
    assert {row.name for row in ending} == {"launch", "register", "first_heartbeat", "first_job"}
    assert all(row.abort for row in ending)


@pytest.mark.parametrize(("settings", "keys", "limit"), [
    ({}, {}, 300),  # the default
    ({"starting_timeout_seconds": 3600}, {}, 3600),  # an old vcycle.conf keeps its starting timeout
    ({"starting_timeout_seconds": 3600}, {"launch_timeout_seconds": 120}, 120),  # the machinetype's own wins
])
def test_a_starting_machine_is_deleted_past_its_launch_deadline_never_before(
        settings: dict[str, object], keys: dict[str, object], limit: int) -> None:
    config = make_config(settings=settings, machinetypes={"mt": keys})
    slow = rec("m", S.STARTING, created=T0)
    assert deletes(config, slow, T0 + timedelta(seconds=limit)) == []  # slow, within its deadline
    (order,) = deletes(config, slow, T0 + timedelta(seconds=limit + 1))
    assert (order.code, order.message, order.abort) == (700, "Failed to start", True)
    assert f"(launch_timeout_seconds {limit})" in order.reason


def test_a_heartbeating_machinetype_registers_by_its_first_heartbeat() -> None:
    config = make_config(machinetypes={"mt": {"heartbeat_file": "vm-heartbeat", "fizzle_seconds": 3600,
                                              "register_timeout_seconds": 600}})
    started = rec("m", S.RUNNING, created=T0, started_at=T0)
    assert deletes(config, started, T0 + timedelta(seconds=599)) == []
    (order,) = deletes(config, started, T0 + timedelta(seconds=600))
    assert (order.code, order.message, order.abort) == (700, "Heartbeat file not updated", True)
    assert "no heartbeat 600s after the machine started (register_timeout_seconds 600)" in order.reason
    beating = rec("m", S.RUNNING, created=T0, started_at=T0, heartbeat_at=T0 + timedelta(seconds=500))
    assert deletes(config, beating, T0 + timedelta(seconds=900)) == []  # registered: fizzle_seconds rules now


def batch_deletes(keys: dict[str, object], record: object, busy: bool, idle_jobs: int,
                  now: object) -> list[DeleteOrder]:
    config = make_config(machinetypes={"mt": {"demand": "q", **keys}}, extra="[demand q]\ntype = file\npath = /x\n")
    space = config.spaces["sp"]
    _, found, _ = retire.batch_orders([record], {"m": busy}, space, config.settings,  # type: ignore[list-item]
                                      {"mt": Demand(idle_jobs=idle_jobs)}, lambda _: None, (), (), now)  # type: ignore[arg-type]
    return found


def test_a_registered_machine_that_never_ran_a_job_while_jobs_wait_is_deleted_at_its_first_job_deadline() -> None:
    registered = T0 + timedelta(seconds=60)
    never = rec("m", S.RUNNING, created=T0, started_at=T0, registered_at=registered, idle_since=registered)
    keys = {"first_job_timeout_seconds": 1800}
    assert batch_deletes(keys, never, False, 5, registered + timedelta(seconds=1799)) == []
    (order,) = batch_deletes(keys, never, False, 5, registered + timedelta(seconds=1800))
    assert (order.code, order.message, order.abort) == (700, "Ran no job", True)
    assert "run no job 1800s after it registered, while idle jobs wait (first_job_timeout_seconds 1800)" in order.reason
    # no idle jobs: nothing it could have run (idle retirement decides about it), so no abort
    assert batch_deletes(keys, never, False, 0, registered + timedelta(seconds=4000)) == []
    # it ran a job once (idle since later than its registration), or runs one now: it works
    worked = rec("m", S.RUNNING, created=T0, started_at=T0, registered_at=registered,
                 idle_since=registered + timedelta(seconds=900))
    assert batch_deletes(keys, worked, False, 5, registered + timedelta(seconds=4000)) == []
    assert batch_deletes(keys, never, True, 5, registered + timedelta(seconds=4000)) == []
    assert batch_deletes({"first_job_timeout_seconds": 0}, never, False, 5, registered + timedelta(days=1)) == []


def test_an_unregistered_batch_machine_is_deleted_at_its_register_deadline_by_default() -> None:
    unregistered = rec("m", S.RUNNING, created=T0, started_at=T0)
    config = make_config(machinetypes={"mt": {"demand": "q"}}, extra="[demand q]\ntype = file\npath = /x\n")
    space = config.spaces["sp"]

    def found(now: object) -> list[DeleteOrder]:
        return retire.batch_orders([unregistered], {}, space, config.settings, {"mt": Demand(idle_jobs=1)},
                                   lambda _: None, (), (), now)[1]  # type: ignore[arg-type]

    assert found(T0 + timedelta(seconds=899)) == []
    (order,) = found(T0 + timedelta(seconds=900))
    assert (order.code, order.message, order.abort) == (500, "Batch daemon did not register", True)


def test_the_stall_breaker_holds_first_heartbeat_deletes_when_many_never_beat_at_once() -> None:
    """An endpoint that new machines cannot reach looks like every machine failing to register: none is deleted."""
    config = make_config(machinetypes={"mt": {"heartbeat_file": "vm-heartbeat", "fizzle_seconds": 3600,
                                              "register_timeout_seconds": 600}})
    silent = tuple(rec(f"m{i}", S.RUNNING, created=T0, started_at=T0) for i in range(4))
    result = plan(SpaceSnapshot("sp", silent), {}, config, T0 + timedelta(seconds=700))
    assert result.deletes == ()
    assert any(d.rule == "stall_breaker" for d in result.decisions)


def test_the_register_breaker_holds_when_no_machine_of_the_machinetype_ever_registered() -> None:
    """Three machines past their register deadline at once and none of the machinetype ever registered: its
    user-data more likely does not name the machine to the batch daemon. None is deleted, and a HOLD says what
    to check; once one of them registered, the late ones are deleted as before."""
    config = make_config(machinetypes={"mt": {"demand": "q"}}, extra="[demand q]\ntype = file\npath = /x\n")
    space = config.spaces["sp"]
    late = [rec(f"m{i}", S.RUNNING, created=T0, started_at=T0) for i in range(3)]

    def orders(records: list, registered: dict[str, bool]) -> tuple[list, list]:  # type: ignore[type-arg]
        _, found, decisions = retire.batch_orders(records, registered, space, config.settings,
                                                  {"mt": Demand(idle_jobs=1)}, lambda _: None, (), (),
                                                  T0 + timedelta(seconds=901))
        return found, decisions

    found, decisions = orders(late, {})
    assert found == [] and [d.rule for d in decisions] == ["register_breaker"]
    assert "none of its machines ever registered" in decisions[0].reason
    joined = rec("ok", S.RUNNING, created=T0, started_at=T0, registered_at=T0)
    found, decisions = orders([*late, joined], {"ok": True})
    assert sorted(o.machine for o in found) == ["m0", "m1", "m2"]
    assert {d.rule for d in decisions} == {"register_timeout"}
    found, _ = orders(late[:2], {})  # two are not many: deleted
    assert len(found) == 2
