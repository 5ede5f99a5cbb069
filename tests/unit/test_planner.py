"""The planner applies every vcycle rule and says why, with the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest
from vctest import T0, make_config, rec

from vcycle.core.model import Action, Backoff, Demand, Plan, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.core.sections import Config
from vcycle.core.states import MachineState

S = MachineState
NOW = T0 + timedelta(hours=1)


def run(config: Config, records=(), demand: Mapping[str, Demand] | None = None, now=NOW,  # type: ignore[no-untyped-def]
        **snapshot: object) -> Plan:
    return plan(SpaceSnapshot("sp", tuple(records), **snapshot), demand or {}, config, now)  # type: ignore[arg-type]


def created(result: Plan) -> list[str]:
    return [c.machinetype for c in result.creates]


def holds(result: Plan, machinetype: str | None = None) -> list[str]:
    return [d.reason for d in result.decisions
            if d.action is Action.HOLD and (machinetype is None or d.machinetype == machinetype)]


def deleted(result: Plan) -> dict[str, tuple[int | None, str]]:
    return {d.machine: (d.code, d.message) for d in result.deletes}


# --- creation: limits -------------------------------------------------------------

def test_empty_space_is_filled_up_to_the_per_cycle_cap() -> None:
    result = run(make_config(limit=100))
    assert created(result) == ["mt"] * 10  # ceil(0.1 x 100)
    assert any("creation cap 10/10 processors this cycle" in h for h in holds(result))
    assert all(d.reason.startswith("lowest weighted count per share") for d in result.decisions
               if d.action is Action.CREATE)


def test_per_cycle_cap_follows_max_create_fraction() -> None:
    assert len(run(make_config(limit=100, settings={"max_create_fraction": 0.25})).creates) == 25
    assert len(run(make_config(limit=7, settings={"max_create_fraction": 0.1})).creates) == 1  # ceil(0.7)


def test_space_limit_counts_every_state_and_foreign_machines() -> None:
    records = [rec(f"r{i}", s) for i, s in enumerate([S.RUNNING, S.STOPPED, S.DELETING, S.REQUESTED])]
    result = run(make_config(limit=10, settings={"max_create_fraction": 1}), records, foreign_processors=4)
    assert len(result.creates) == 2
    assert any("processors_limit 10/10 processors in space sp (4 not ours)" in h for h in holds(result))


def test_gone_and_create_failed_do_not_count() -> None:
    records = [rec("a", S.GONE), rec("b", S.CREATE_FAILED)]
    assert len(run(make_config(limit=2, settings={"max_create_fraction": 1}), records).creates) == 2


def test_a_machine_that_would_exceed_the_space_limit_is_not_created() -> None:
    config = make_config(limit=10, settings={"max_create_fraction": 1}, machinetypes={"mt": {"min_processors": 4}})
    result = run(config)
    assert [c.processors for c in result.creates] == [4, 4]
    assert any("no room for 4 more" in h for h in holds(result))


def test_cloud_quota_is_the_limit_when_no_processors_limit_is_set() -> None:
    result = run(make_config(limit=None, settings={"max_create_fraction": 1}), quota_processors=3)
    assert len(result.creates) == 3
    assert any("cloud quota 3/3" in h for h in holds(result))


def test_smaller_quota_wins_over_processors_limit() -> None:
    result = run(make_config(limit=50, settings={"max_create_fraction": 1}), quota_processors=5)
    assert len(result.creates) == 5


def test_no_limit_and_no_quota_creates_nothing_and_says_so() -> None:
    result = run(make_config(limit=None))
    assert result.creates == ()
    assert holds(result) == ["no processors_limit configured and the cloud reports no quota: nothing is created"]


def test_machinetype_processors_limit() -> None:
    config = make_config(limit=100, machinetypes={"mt": {"processors_limit": 3}})
    result = run(config, [rec("a", S.RUNNING)])
    assert len(result.creates) == 2
    assert holds(result, "mt") == ["machinetype processors_limit 3/3"]


def test_max_starting_processors() -> None:
    config = make_config(limit=100, machinetypes={"mt": {"max_starting_processors": 3}})
    result = run(config, [rec("a", S.STARTING), rec("b", S.REQUESTED), rec("c", S.RUNNING)])
    assert len(result.creates) == 1
    assert holds(result, "mt") == ["max_starting_processors 3/3 starting"]


def test_zero_share_is_never_created() -> None:
    config = make_config(machinetypes={"never": {"target_share": 0}})
    assert run(config).creates == ()


# --- creation: shares -------------------------------------------------------------

def test_shares_split_creation_by_target_share() -> None:
    config = make_config(limit=100, settings={"max_create_fraction": 0.4},
                         machinetypes={"a": {"target_share": 3}, "b": {"target_share": 1}})
    result = run(config)
    assert created(result).count("a") == 30 and created(result).count("b") == 10


def test_lowest_weighted_count_goes_first_and_ties_break_by_name() -> None:
    config = make_config(limit=100, settings={"max_create_fraction": 0.01},
                         machinetypes={"b": {}, "a": {}})
    assert created(run(config)) == ["a"]
    assert created(run(config, [rec("x", S.RUNNING, mt="a")])) == ["b"]


def test_shares_are_weighted_by_hs06() -> None:
    config = make_config(limit=100, settings={"max_create_fraction": 0.01},
                         machinetypes={"fast": {"hs06_per_processor": 20}, "slow": {"hs06_per_processor": 10}})
    # one fast machine weighs 20, two slow ones weigh 20: tie, broken by name
    records = [rec("f", S.RUNNING, mt="fast", hs06=20.0), rec("s1", S.RUNNING, mt="slow", hs06=10.0)]
    assert created(run(config, records)) == ["slow"]
    records.append(rec("s2", S.RUNNING, mt="slow", hs06=10.0))
    assert created(run(config, records)) == ["fast"]
    assert run(config, records).creates[0].hs06 == 20.0


# --- creation: flavors ---------------------------------------------------------------

def test_first_flavor_within_the_processor_range_wins() -> None:
    config = make_config(machinetypes={"mt": {"flavor_names": "tiny big huge", "min_processors": 2,
                                              "max_processors": 8}})
    result = run(config, flavors={"tiny": 1, "big": 4, "huge": 16})
    assert {(c.flavor, c.processors) for c in result.creates} == {("big", 4)}


def test_no_fitting_flavor_is_a_refusal_naming_the_flavors() -> None:
    config = make_config(machinetypes={"mt": {"flavor_names": "tiny gone", "min_processors": 2}})
    result = run(config, flavors={"tiny": 1})
    assert result.creates == ()
    assert holds(result, "mt") == ["no flavor has 2.. processors (vcpus: tiny=1, gone=not in cloud)"]


def test_without_flavor_sizes_the_first_flavor_and_min_processors_are_used() -> None:
    config = make_config(machinetypes={"mt": {"flavor_names": "a b", "min_processors": 2}})
    assert {(c.flavor, c.processors) for c in run(config).creates} == {("a", 2)}


# --- creation: backoff --------------------------------------------------------------

def test_backoff_blocks_creation_after_abort() -> None:
    backoff = Backoff("mt", NOW - timedelta(seconds=100), "m1 stopped with '300 No work'")
    result = run(make_config(), backoffs={"mt": backoff})
    assert result.creates == ()
    assert holds(result, "mt") == ["backoff: last abort 100s ago, backoff_seconds 600 (m1 stopped with '300 No work')"]


def test_after_backoff_one_machine_probes_then_fizzle_holds_the_rest() -> None:
    backoff = Backoff("mt", NOW - timedelta(seconds=700), "abort")  # backoff 600 passed, fizzle 300 not
    result = run(make_config(), backoffs={"mt": backoff})
    assert len(result.creates) == 1
    assert "within backoff_seconds + fizzle_seconds 900" in holds(result, "mt")[0]


def test_after_backoff_and_fizzle_creation_is_free_again() -> None:
    backoff = Backoff("mt", NOW - timedelta(seconds=901), "abort")
    assert len(run(make_config(), backoffs={"mt": backoff}).creates) == 10


# --- creation: demand ---------------------------------------------------------------

DEMANDED = {"mt": {"demand": "q", "min_processors": 4}}
Q = "[demand q]\ntype = file\npath = /dev/null\n"


def test_demand_limits_new_machines_to_the_idle_work() -> None:
    config = make_config(limit=1000, machinetypes=DEMANDED, extra=Q)
    result = run(config, demand={"mt": Demand(idle_jobs=9)})  # 9 jobs / 4 per machine -> 3 machines
    assert len(result.creates) == 3
    assert any(h.startswith("demand satisfied") for h in holds(result, "mt"))


def test_demand_counts_machines_still_starting() -> None:
    config = make_config(limit=1000, machinetypes=DEMANDED, extra=Q)
    records = [rec("s", S.STARTING, processors=4), rec("r", S.RUNNING, processors=4)]
    assert len(run(config, records, demand={"mt": Demand(idle_jobs=9)}).creates) == 2


def test_shaped_demand_is_packed_into_machines_of_the_machinetypes_size() -> None:
    from vcycle.core.model import JobShape

    config = make_config(limit=1000, machinetypes={"mt": {**DEMANDED["mt"], "mb_per_processor": 2000}}, extra=Q)
    # 4-processor machines with 8000 MB: 3 jobs of 3 cores take a machine each, leaving a core there for 3 of
    # the 6 one-core 2000 MB jobs; the other 3 share a fourth machine; a 5-core job fits none: reported only
    shaped = Demand(idle_jobs=10, shapes=(JobShape(1, 2000, 0, 6), JobShape(3, 1000, 0, 3), JobShape(5, 0, 0, 1)))
    result = run(config, [rec("s", S.STARTING, processors=4)], demand={"mt": shaped})
    assert len(result.creates) == 3  # 4 machines' worth, one of them already starting
    assert "idle jobs fill 4 machines of 4 processors" in next(h for h in holds(result, "mt")
                                                                if h.startswith("demand satisfied"))
    assert any(h.startswith("1 idle jobs ask for more than one 4-processor machine has (8000 MB, 160 GB disk)")
               for h in holds(result, "mt"))
    by_memory = Demand(idle_jobs=8, shapes=(JobShape(1, 4000, 0, 8),))  # memory, not cores, is what runs out
    assert len(run(config, demand={"mt": by_memory}).creates) == 4


def test_jobs_per_machine_overrides_processors() -> None:
    config = make_config(limit=1000, machinetypes={"mt": {**DEMANDED["mt"], "jobs_per_machine": 1}}, extra=Q)
    assert len(run(config, demand={"mt": Demand(idle_jobs=9)}).creates) == 9


def test_unknown_demand_creates_nothing_but_still_deletes() -> None:
    config = make_config(limit=1000, machinetypes=DEMANDED, extra=Q)
    records = [rec("done", S.STOPPED, processors=4)]
    result = run(config, records, demand={"mt": Demand.unknown("collector unreachable")})
    assert result.creates == ()
    assert holds(result, "mt") == ["demand unknown: collector unreachable"]
    assert list(deleted(result)) == ["done"]


def test_missing_demand_report_is_unknown_not_zero() -> None:
    config = make_config(limit=1000, machinetypes=DEMANDED, extra=Q)
    result = run(config)
    assert result.creates == () and "reported nothing" in holds(result, "mt")[0]


def test_machinetypes_without_demand_fill_free_capacity() -> None:
    config = make_config(limit=100, machinetypes={"mt": {}, "dem": {"demand": "q"}}, extra=Q)
    result = run(config, demand={"dem": Demand(idle_jobs=0)})
    assert set(created(result)) == {"mt"}


# --- creation: drain and shutdown_time ---------------------------------------------------

def test_drained_machinetype_creates_nothing_but_keeps_its_machines() -> None:
    result = run(make_config(), [rec("a", S.RUNNING, started_at=NOW)], draining=frozenset({"mt"}))
    assert result.creates == () and result.deletes == ()
    assert holds(result, "mt") == ["drained by an operator: no new machines"]


def test_space_shutdown_time_in_the_past_creates_nothing_and_deletes_running() -> None:
    past = int((NOW - timedelta(seconds=1)).timestamp())
    result = run(make_config(space={"shutdown_time": past}), [rec("a", S.RUNNING, started_at=T0)])
    assert result.creates == ()
    assert deleted(result) == {"a": (700, "Passed shutdowntime")}


def test_new_machines_shutdown_time_is_capped_by_space_shutdown_time() -> None:
    soon = NOW + timedelta(seconds=60)
    result = run(make_config(space={"shutdown_time": int(soon.timestamp())}))
    assert {c.shutdown_at for c in result.creates} == {soon}
    unlimited = run(make_config())
    assert {c.shutdown_at for c in unlimited.creates} == {NOW + timedelta(seconds=86400)}


# --- deletions -----------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "extra", "expected"), [
    (S.STOPPED, {"shutdown_code": 200, "shutdown_text": "Success"}, (200, "Success")),
    (S.FAILED, {}, (None, "")),
    (S.RUNNING, {"shutdown_at": NOW}, (700, "Exceeded max_wallclock_seconds")),
    (S.DRAINING, {"shutdown_at": NOW - timedelta(seconds=1)}, (700, "Exceeded max_wallclock_seconds")),
    (S.STARTING, {"created": NOW - timedelta(seconds=301)}, (700, "Failed to start")),
    (S.DELETE_FAILED, {}, (None, "")),
    (S.DELETE_FAILED, {"last_delete_at": NOW - timedelta(seconds=601)}, (None, "")),
])
def test_machines_that_must_go_are_deleted(state: S, extra: dict[str, object],
                                           expected: tuple[int | None, str]) -> None:
    record = rec("m", state, **extra)  # type: ignore[arg-type]
    result = run(make_config(), [record])
    assert deleted(result) == {"m": expected}
    (decision,) = [d for d in result.decisions if d.action is Action.DELETE]
    assert decision.machine == "m" and decision.reason


@pytest.mark.parametrize(("state", "extra"), [
    (S.RUNNING, {"shutdown_at": NOW + timedelta(seconds=1)}),
    (S.STARTING, {"created": NOW - timedelta(seconds=299)}),
    (S.DELETE_FAILED, {"last_delete_at": NOW - timedelta(seconds=599)}),
    (S.DELETING, {}),
    (S.REQUESTED, {}),
    (S.GONE, {}),
    (S.CREATE_FAILED, {}),
])
def test_machines_that_may_stay_are_not_deleted(state: S, extra: dict[str, object]) -> None:
    assert run(make_config(), [rec("m", state, **extra)]).deletes == ()  # type: ignore[arg-type]


HEARTBEAT = {"mt": {"heartbeat_file": "vm-heartbeat", "heartbeat_seconds": 600, "fizzle_seconds": 300}}


@pytest.mark.parametrize(("started_ago", "beat_ago", "deleted_"), [
    (200, None, False),  # still within fizzle_seconds: not checked
    (400, None, True),  # past fizzle and never a heartbeat
    (400, 100, False),  # fresh heartbeat
    (4000, 700, True),  # heartbeat older than heartbeat_seconds
])
def test_heartbeat_is_required_after_fizzle(started_ago: int, beat_ago: int | None, deleted_: bool) -> None:
    beat = None if beat_ago is None else NOW - timedelta(seconds=beat_ago)
    record = rec("m", S.RUNNING, started_at=NOW - timedelta(seconds=started_ago), heartbeat_at=beat)
    result = run(make_config(machinetypes=HEARTBEAT), [record])
    assert deleted(result) == ({"m": (700, "Heartbeat file not updated")} if deleted_ else {})


def _fleet(stale: int, fresh: int, silent: int = 0, **mt: object) -> tuple[Config, list[object]]:
    """A machinetype of running machines: ``stale`` past heartbeat_seconds, ``silent`` beyond half of it, the
    others beating."""
    config = make_config(limit=1000, machinetypes={"mt": {**HEARTBEAT["mt"], **mt}})
    ages = [700] * stale + [400] * silent + [60] * fresh
    records = [rec(f"m{i:03d}", S.RUNNING, started_at=NOW - timedelta(hours=2), heartbeat_at=NOW - timedelta(seconds=a))
               for i, a in enumerate(ages)]
    return config, records


def test_heartbeats_stopping_for_many_machines_at_once_delete_none_and_say_why() -> None:
    config, records = _fleet(stale=30, fresh=70)
    result = run(config, records)
    assert deleted(result) == {}
    (hold,) = [d for d in result.decisions if d.rule == "stall_breaker"]
    assert hold.reason.startswith("heartbeats stopped for 30 of 100 running machines at once")
    assert "max_stall_kill_fraction 0.2" in hold.reason and "vcycle machines delete --stalled sp mt" in hold.reason
    # an endpoint outage seen early: a few stale, most of the rest silent for over half of heartbeat_seconds
    config, records = _fleet(stale=3, silent=60, fresh=37)
    assert deleted(run(config, records)) == {} and holds(run(config, records), "mt")


@pytest.mark.parametrize(("stale", "silent", "fresh", "fraction"), [
    (5, 0, 95, 0.2),  # a few sick machines among many: deleted as always
    (2, 0, 1, 0.2),  # two of three, fewer than STALL_ALARM_MACHINES: deleted
    (30, 0, 70, 1.0),  # the breaker switched off
])
def test_stale_machines_below_the_breaker_are_deleted(stale: int, silent: int, fresh: int, fraction: float) -> None:
    config, records = _fleet(stale=stale, silent=silent, fresh=fresh, max_stall_kill_fraction=fraction)
    result = run(config, records)
    assert len(deleted(result)) == stale and not [d for d in result.decisions if d.rule == "stall_breaker"]


def test_the_breaker_holds_only_heartbeat_deletes_and_an_operator_confirmation_passes_it() -> None:
    config, records = _fleet(stale=30, fresh=70)
    records[0] = rec("m000", S.STOPPED, started_at=NOW - timedelta(hours=2))  # stopped: deleted anyway
    records[1] = rec("m001", S.RUNNING, started_at=NOW - timedelta(hours=2), heartbeat_at=NOW - timedelta(hours=1),
                     delete_requested="operator: confirmed the stalled heartbeats")
    assert set(deleted(run(config, records))) == {"m000", "m001"}


def test_ramp_up_attenuation_makes_a_share_of_the_missing_machines_each_cycle() -> None:
    keys = {"demand": "q", "jobs_per_machine": 1, "ramp_up_attenuation": 4}
    config = make_config(limit=1000, machinetypes={"mt": keys}, extra=Q, settings={"max_create_fraction": 1})
    first = run(config, demand={"mt": Demand(idle_jobs=40)})
    assert len(first.creates) == 10  # 40 missing, a quarter this cycle
    (hold,) = [d for d in first.decisions if d.rule == "ramp_up"]
    assert hold.reason == ("ramp-up: 10 of the 40 machines the idle jobs need are made this cycle "
                           "(ramp_up_attenuation 4)")
    starting = [rec(f"s{i}", S.STARTING, created=NOW) for i in range(10)]
    assert len(run(config, starting, demand={"mt": Demand(idle_jobs=40)}).creates) == 8  # 30 missing: 8
    without = make_config(limit=1000, machinetypes={"mt": {**keys, "ramp_up_attenuation": 1}}, extra=Q,
                          settings={"max_create_fraction": 1})
    every = run(without, demand={"mt": Demand(idle_jobs=40)})
    assert len(every.creates) == 40 and not [d for d in every.decisions if d.rule == "ramp_up"]


def test_a_ramp_up_attenuation_below_one_is_a_configuration_error() -> None:
    from vcycle.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_config(machinetypes={"mt": {"demand": "q", "ramp_up_attenuation": 0.5}}, extra=Q)
    assert "ramp_up_attenuation" in str(caught.value)


def test_heartbeat_seconds_zero_checks_existence_only() -> None:
    config = make_config(machinetypes={"mt": {"heartbeat_file": "hb", "heartbeat_seconds": 0}})
    record = rec("m", S.RUNNING, started_at=T0, heartbeat_at=T0 + timedelta(seconds=1))
    assert run(config, [record]).deletes == ()


def test_plan_is_deterministic() -> None:
    config = make_config(limit=100, machinetypes={"a": {"target_share": 2}, "b": {"hs06_per_processor": 10}})
    records = [rec(f"m{i}", S.RUNNING if i % 2 else S.STOPPED, mt="ab"[i % 2]) for i in range(7)]
    assert run(config, records) == run(config, records)


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.DRAINING])
def test_operator_delete_request_is_carried_out(state: S) -> None:
    result = run(make_config(), [rec("m", state, started_at=NOW, delete_requested="operator: broken disk")])
    assert deleted(result) == {"m": (700, "Deleted by operator")}
    assert [d.reason for d in result.decisions if d.action is Action.DELETE] == ["operator: broken disk"]


def test_operator_delete_waits_for_a_requested_machine_to_be_listed() -> None:
    assert run(make_config(), [rec("m", S.REQUESTED, delete_requested="operator")]).deletes == ()
