"""Hypothesis invariants of the pure core over random snapshots."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vctest import T0, cloud, config_text, load_text, rec

from vcycle.core import rules
from vcycle.core.model import Backoff, CloudStatus, Cooldown, Demand, Offering, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.core.states import HOLDS_PROCESSORS, STARTING_STATES, MachineState
from vcycle.core.sync import sync

NOW = T0 + timedelta(hours=2)
MACHINETYPES = ("alpha", "beta", "gamma")

CONFIGS = {
    (limit, fraction, demand): load_text(config_text(
        limit=limit,
        settings={"max_create_fraction": fraction},
        machinetypes={
            "alpha": {"target_share": 2, "min_processors": 2, "processors_limit": 20, "max_starting_processors": 6},
            "beta": {"target_share": 1, "hs06_per_processor": 10, "heartbeat_file": "hb", "heartbeat_seconds": 300},
            "gamma": {"target_share": 1, "min_processors": 4, **({"demand": "q"} if demand else {})},
        },
        extra="[demand q]\ntype = file\npath = /dev/null\n",
    ))
    for limit in (0, 8, 40) for fraction in (0.1, 0.5, 1.0) for demand in (False, True)
}

records = st.lists(
    st.builds(
        lambda i, state, mt, processors, age, hb: rec(
            f"m{i}", state, mt=mt, processors=processors, created=NOW - timedelta(seconds=age),
            started_at=NOW - timedelta(seconds=age // 2), shutdown_at=T0 + timedelta(seconds=age * 2),
            heartbeat_at=None if hb is None else NOW - timedelta(seconds=hb)),
        st.integers(0, 10_000), st.sampled_from(list(MachineState)), st.sampled_from([*MACHINETYPES, "removed"]),
        st.integers(1, 8), st.integers(0, 20_000), st.none() | st.integers(0, 2000),
    ),
    max_size=25, unique_by=lambda r: r.name,
)
demands = st.dictionaries(
    st.sampled_from(MACHINETYPES),
    st.one_of(st.builds(Demand, idle_jobs=st.integers(0, 50), running_jobs=st.integers(0, 50)),
              st.just(Demand.unknown("source failed"))),
)
backoffs = st.dictionaries(st.sampled_from(MACHINETYPES), st.builds(
    lambda mt, ago: Backoff(mt, NOW - timedelta(seconds=ago), "abort"), st.sampled_from(MACHINETYPES),
    st.integers(0, 3000)))
snapshots = st.builds(
    lambda rs, foreign, quota, bo: SpaceSnapshot("sp", tuple(rs), foreign_processors=foreign, quota_processors=quota,
                                                 backoffs=bo),
    records, st.integers(0, 20), st.none() | st.integers(0, 40), backoffs)
config_keys = st.sampled_from(sorted(CONFIGS))


def held(snapshot: SpaceSnapshot, machinetype: str | None = None) -> int:
    return sum(r.processors for r in snapshot.records
               if r.state in HOLDS_PROCESSORS and (machinetype is None or r.machinetype == machinetype))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots, demands, config_keys)
def test_creation_never_exceeds_a_limit(snapshot: SpaceSnapshot, demand: dict[str, Demand],
                                        key: tuple[int, float, bool]) -> None:
    config = CONFIGS[key]
    space = config.spaces["sp"]
    result = plan(snapshot, demand, config, NOW)
    new = sum(c.processors for c in result.creates)
    limits = [x for x in (space.processors_limit, snapshot.quota_processors) if x is not None]
    before = held(snapshot) + snapshot.foreign_processors
    if result.creates:
        assert before + new <= min(limits)
    for name, mt in space.machinetypes.items():
        mine = sum(c.processors for c in result.creates if c.machinetype == name)
        if mine and mt.processors_limit is not None:
            assert held(snapshot, name) + mine <= mt.processors_limit
        starting = sum(r.processors for r in snapshot.records if r.machinetype == name and r.state in STARTING_STATES)
        if mine and mt.max_starting_processors is not None:
            assert starting + mine <= mt.max_starting_processors


@settings(max_examples=300, deadline=None)
@given(snapshots, demands, config_keys)
def test_no_creation_on_unknown_demand_and_no_more_than_demand_asks(
        snapshot: SpaceSnapshot, demand: dict[str, Demand], key: tuple[int, float, bool]) -> None:
    config = CONFIGS[key]
    result = plan(snapshot, demand, config, NOW)
    gamma = config.spaces["sp"].machinetypes["gamma"]
    if gamma.demand is None:
        return
    made = [c for c in result.creates if c.machinetype == "gamma"]
    wanted = demand.get("gamma")
    if wanted is None or not wanted.known:
        assert made == []
    else:
        assert len(made) <= max(0, -(-wanted.idle_jobs // 4))


@settings(max_examples=300, deadline=None)
@given(snapshots, demands, config_keys)
def test_plan_is_deterministic_and_every_action_has_a_rule_and_a_reason(
        snapshot: SpaceSnapshot, demand: dict[str, Demand], key: tuple[int, float, bool]) -> None:
    config = CONFIGS[key]
    first = plan(snapshot, demand, config, NOW)
    assert first == plan(snapshot, demand, config, NOW)
    assert all(d.reason for d in first.decisions)
    assert all(d.rule in rules.RULES and rules.RULES[d.rule].startswith(d.action.value) for d in first.decisions)
    assert len([d for d in first.decisions if d.action.value == "create"]) == len(first.creates)
    assert len([d for d in first.decisions if d.action.value == "delete"]) == len(first.deletes)
    names = {r.name for r in snapshot.records}
    assert {d.machine for d in first.deletes} <= names


@settings(max_examples=200, deadline=None)
@given(records, st.lists(st.tuples(st.integers(0, 50), st.sampled_from(list(CloudStatus)), st.booleans(),
                                   st.sampled_from(["mgr", "other"])), max_size=25))
def test_sync_never_adopts_or_touches_foreign_machines(rs, listing) -> None:  # type: ignore[no-untyped-def]
    machines = [cloud(f"c{i}", status, owned=owned, manager=manager) for i, status, owned, manager in
                {(i, s, o, m) for i, s, o, m in listing}]
    machines = list({m.name: m for m in machines}.values())
    config = CONFIGS[(40, 0.1, False)]
    result = sync(rs, machines, {}, NOW, space=config.spaces["sp"], settings=config.settings)
    known = {r.name for r in result.records}
    for machine in machines:
        ours = machine.owner is not None and machine.owner.manager == "mgr"
        if not ours:
            assert machine.name not in known or machine.name in {r.name for r in rs}
        elif machine.status is not CloudStatus.DELETED:
            assert machine.name in known  # every tagged machine is known after one sync
    assert len(result.records) >= len(rs)


@settings(max_examples=300, deadline=None)
@given(snapshots, config_keys, st.integers(-3000, 3000))
def test_fast_path_deletes_exactly_what_the_rules_say(snapshot: SpaceSnapshot, key: tuple[int, float, bool],
                                                      shift: int) -> None:
    from vcycle.core.planner import _delete_verdict

    config = CONFIGS[key]
    space = config.spaces["sp"]
    now = NOW + timedelta(seconds=shift)
    result = plan(snapshot, {}, config, now)
    held = {d.machinetype for d in result.decisions if d.rule == "stall_breaker"}  # the mass-kill breaker
    verdicts = {r.name: (r, _delete_verdict(r, space, config.settings, space.shutdown_time, now))
                for r in snapshot.records if r.state in HOLDS_PROCESSORS}
    reference = {name for name, (r, v) in verdicts.items()
                 if v is not None and not (v[3] == "heartbeat" and r.machinetype in held)}
    assert {d.machine for d in result.deletes} == reference


OFFERED = load_text(config_text(limit=40, settings={"max_create_fraction": 1.0}, machinetypes={
    "alpha": {"target_share": 2, "min_processors": 2, "max_processors": 4, "processors_limit": 20,
              "flavor_names": "small big other", "zones": "za zb", "capacity_types": "spot on-demand"},
    "beta": {"target_share": 1, "flavor_names": "small", "zones": "za"},
}))
FLAVOR_SIZES = {"small": 2, "big": 4, "other": 2}
cooldowns = st.dictionaries(
    st.tuples(st.sampled_from(["alpha", "beta"]),
              st.builds(lambda f, z, c: Offering(f, z, c).key, st.sampled_from(["small", "big", "other", None]),
                        st.sampled_from(["za", "zb", None]), st.sampled_from(["spot", "on-demand", None]))),
    st.integers(0, 400), max_size=8)


@settings(max_examples=300, deadline=None)
@given(records, cooldowns, st.none() | st.integers(0, 40))
def test_across_offerings_limits_hold_and_no_create_or_fallback_is_on_a_cooling_offering(
        rs: list, cooled: dict[tuple[str, str], int], quota: int | None) -> None:  # type: ignore[type-arg]
    snapshot = SpaceSnapshot("sp", tuple(rs), quota_processors=quota, flavors=FLAVOR_SIZES, cooldowns={
        key: Cooldown(key[0], key[1], NOW - timedelta(seconds=ago), "InsufficientInstanceCapacity")
        for key, ago in cooled.items()})
    result = plan(snapshot, {}, OFFERED, NOW)
    space = OFFERED.spaces["sp"]
    new = sum(c.processors for c in result.creates)
    limits = [x for x in (space.processors_limit, quota) if x is not None]
    assert not result.creates or held(snapshot) + new <= min(limits)
    mine = sum(c.processors for c in result.creates if c.machinetype == "alpha")
    assert not mine or held(snapshot, "alpha") + mine <= 20
    cooling = [(mt, Offering.parse(key)) for (mt, key), ago in cooled.items() if ago < 180]
    for order in result.creates:
        for offering in (order.offering, *order.fallbacks):
            assert not [o for mt, o in cooling if mt == order.machinetype and o.covers(offering)], (offering, cooling)
            assert FLAVOR_SIZES[offering.flavor or ""] == order.processors  # a fallback is of the same size
            assert offering.zone in space.machinetypes[order.machinetype].zones
