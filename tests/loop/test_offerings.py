"""Offerings: a machinetype's flavors of one size, in order. Real cycles over FakeConnector on a FakeClock with a
real SQLite store; the cloud has no capacity for one flavor, every time (as EC2's InsufficientInstanceCapacity).

A create that finds no capacity falls through to the next offering in the same cycle; no more than one create
call reaches the full offering per offering_cooldown_seconds; the machinetype is not backed off, and other
machinetypes' creates go on as before.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

from vctest import config_text, load_text, plain_render

from vcycle.core.states import MachineState
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

S = MachineState
FLAVORS = {"m5.large": 2, "m5a.large": 2, "c5.xlarge": 4}


def site(store: Store, clock: FakeClock, cloud: FakeConnector, limit: int = 400, **mt: object) -> SpaceContext:
    config = load_text(config_text(limit=limit, settings={"max_create_fraction": 20 / limit}, machinetypes={
        "spot": {"flavor_names": "m5.large m5a.large", "min_processors": 2, "max_processors": 2,
                 "target_share": 1, **mt},
        "other": {"flavor_names": "c5.xlarge", "min_processors": 4, "target_share": 1},
    }))
    return SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)


def test_a_full_offering_gets_one_call_per_cooldown_and_the_next_takes_its_machines(store: Store) -> None:
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full.add("m5.large")
    ctx = site(store, clock, cloud)
    calls_per_window: dict[int, int] = {}
    for minute in range(12):  # one cycle a minute: four cooldown windows of 180 s
        before = len(cloud.created_on)
        report = run_cycle(ctx)
        made = cloud.created_on[before:]
        calls_per_window[minute // 3] = calls_per_window.get(minute // 3, 0) + made.count("m5.large")
        assert made.count("m5a.large") >= 1 or minute >= 10  # the next offering made machines this very cycle
        assert not [e for e in report.errors if e.kind != "create_refused_capacity"]
        clock.advance(60)
    assert all(n <= 1 for n in calls_per_window.values()), calls_per_window
    records = store.load("sp").records
    spot = [r for r in records if r.machinetype == "spot" and r.state is not S.CREATE_FAILED]
    assert spot and {r.flavor for r in spot} == {"m5a.large"}
    assert "spot" not in store.load("sp").backoffs  # a full offering backs nothing off
    assert any(r.machinetype == "other" for r in records)  # the other machinetype made its machines too
    (cooldown,) = store.load("sp").cooldowns.values()
    assert (cooldown.machinetype, cooldown.offering) == ("spot", "m5.large")
    assert "InsufficientInstanceCapacity" in cooldown.reason


def test_the_first_create_is_the_probe_and_the_others_skip_a_full_offering_in_the_same_cycle(store: Store) -> None:
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full.add("m5.large")
    run_cycle(site(store, clock, cloud))
    assert cloud.created_on.count("m5.large") == 1  # of the cycle's creates for spot, only the probe tried it
    made = [r for r in store.load("sp").records if r.machinetype == "spot"]
    assert len(made) > 2 and all(r.state is S.STARTING and r.flavor == "m5a.large" for r in made)
    assert all("on m5a.large (m5.large had no capacity)" in r.reason for r in made)  # the probe's answer, for all


def test_when_every_offering_is_full_the_request_is_closed_without_backoff_and_both_cool(store: Store) -> None:
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full |= {"m5.large", "m5a.large"}
    ctx = site(store, clock, cloud)
    report = run_cycle(ctx)
    failed = [r for r in store.load("sp").records if r.machinetype == "spot"]
    assert failed and all(r.state is S.CREATE_FAILED for r in failed)
    assert "no capacity on any offering" in failed[0].reason and "no backoff" in failed[0].reason
    assert "spot" not in store.load("sp").backoffs
    assert {k for k in store.load("sp").cooldowns} == {("spot", "m5.large"), ("spot", "m5a.large")}
    assert cloud.created_on.count("m5.large") == 1 and cloud.created_on.count("m5a.large") == 1
    assert {e.kind for e in report.errors} == {"create_refused_capacity"}
    clock.advance(60)
    before = len(cloud.created_on)
    report = run_cycle(ctx)
    assert [c for c in cloud.created_on[before:] if c != "c5.xlarge"] == []  # both cool: none is asked
    holds = [d for d in report.decisions if d.rule == "offering_cooldown"]
    assert holds and "m5.large had no capacity 60s ago" in holds[0].reason
    clock.advance(180)
    before = len(cloud.created_on)
    cloud.full.clear()
    run_cycle(ctx)
    assert "m5.large" in cloud.created_on[before:]  # cooled no longer: the first offering is asked again


def test_status_shows_the_cooling_offering_until_when_and_why(store: Store) -> None:
    from vcycle.store.status import collect

    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full.add("m5.large")
    ctx = site(store, clock, cloud)
    run_cycle(ctx)
    (shown,) = collect(ctx.config, store, clock())["spaces"]["sp"]["cooldowns"]
    assert shown["machinetype"] == "spot" and shown["offering"] == "m5.large"
    assert shown["until"] == (clock() + timedelta(seconds=180)).isoformat()
    assert "InsufficientInstanceCapacity" in shown["reason"]
    clock.advance(180)
    assert collect(ctx.config, store, clock())["spaces"]["sp"]["cooldowns"] == []


def test_refused_credentials_cost_one_create_call_a_cycle_and_back_off(store: Store) -> None:
    """The cloud refuses the space's credentials: of the cycle's creates, one calls it; all fail with its reason
    (what to fix), and the machinetype backs off, so the next cycle calls nothing."""
    from vcycle.errors import Unauthorized

    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.inject("create", Unauthorized("RunInstances: AuthFailure: AWS was not able to validate the provided "
                                        "access credentials (check the space's access_key and secret_key)"), 100)
    ctx = site(store, clock, cloud, backoff_seconds=600)
    report = run_cycle(ctx)
    assert sum(1 for op, _ in cloud.calls if op == "create") == 1
    refused = [e for e in report.errors if e.kind == "create_refused_auth"]
    assert len(refused) > 1 and all("check the space's access_key" in e.message for e in refused)
    assert "AuthFailure" in store.load("sp").backoffs["spot"].reason
    clock.advance(60)
    run_cycle(ctx)
    assert sum(1 for op, _ in cloud.calls if op == "create") == 1  # backed off: not asked again


def test_a_full_offering_cools_twice_as_long_each_time_in_a_row_up_to_max_backoff_seconds(store: Store) -> None:
    """180 s, 360 s, 720 s, then max_backoff_seconds 1000: the probe calls of an offering that stays full are
    that far apart; backoff_reset_seconds without a failure and the count starts again."""
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full.add("m5.large")
    ctx = site(store, clock, cloud, limit=4000, max_backoff_seconds=1000, backoff_reset_seconds=3000)
    start, probes = clock(), []
    for _ in range(60):  # a cycle a minute for an hour
        before = len(cloud.created_on)
        run_cycle(ctx)
        if "m5.large" in cloud.created_on[before:]:
            probes.append(int((clock() - start).total_seconds()))
        clock.advance(60)
    assert probes[:5] == [0, 180, 540, 1260, 2280]  # and so on, 1000 s apart at most (rounded up to a cycle)
    gaps = [b - a for a, b in pairwise(probes)]
    assert gaps[:4] == [180, 360, 720, 1020]
    (cooldown,) = store.load("sp").cooldowns.values()
    assert cooldown.failures == len(probes)
    cloud.full.clear()
    clock.advance(3000)  # backoff_reset_seconds without a failure
    cloud.full.add("m5.large")
    before = len(cloud.created_on)
    run_cycle(ctx)
    assert "m5.large" in cloud.created_on[before:]
    assert store.load("sp").cooldowns[("spot", "m5.large")].failures == 1  # the count started again


def test_repeated_refusals_back_a_machinetype_off_twice_as_long_each_time(store: Store) -> None:
    """A cloud that refuses every create of a machinetype (a bad image): 600 s, 1200 s, then 1800 s, the
    default max_backoff_seconds; the hold and its doubling are in `vcycle plan`'s reason."""
    from vcycle.errors import LaunchRejected

    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.inject("create", LaunchRejected("image ami-gone not found"), 10_000)
    config = load_text(config_text(limit=400, machinetypes={"only": {"backoff_seconds": 600, "target_share": 1}}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    start, tries, reasons = clock(), [], []
    for _ in range(120):  # a cycle a minute for two hours
        before = sum(1 for op, _ in cloud.calls if op == "create")
        report = run_cycle(ctx)
        if sum(1 for op, _ in cloud.calls if op == "create") > before:
            tries.append(int((clock() - start).total_seconds()))
        reasons += [d.reason for d in report.decisions if d.rule == "backoff"]
        clock.advance(60)
    assert [b - a for a, b in pairwise(tries)][:4] == [600, 1200, 1800, 1800]
    assert any("backoff_seconds 600 doubled for 3 failures in a row: 1800 (max_backoff_seconds 1800)" in r
               for r in reasons)


# --- zones and capacity types -----------------------------------------------------------------------------------

SPOT_A, SPOT_B = "m5.large@zone-a/spot", "m5.large@zone-b/spot"


def zoned(store: Store, clock: FakeClock, cloud: FakeConnector) -> SpaceContext:
    return site(store, clock, cloud, flavor_names="m5.large", zones="zone-a zone-b",
                capacity_types="spot on-demand")


def test_spot_in_every_zone_before_on_demand_and_a_full_one_falls_through_in_the_same_cycle(store: Store) -> None:
    """Spot has no room in zone-a: the first create probes it, falls through to spot in zone-b; every other
    create of the cycle goes to zone-b at once. Each machine is made where its offering says."""
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full.add(SPOT_A)
    run_cycle(zoned(store, clock, cloud))
    spot = [c for c in cloud.created_on if c != "c5.xlarge"]
    assert spot[:2] == [SPOT_A, SPOT_B] and spot.count(SPOT_A) == 1 and set(spot[2:]) == {SPOT_B}
    made = [r for r in store.load("sp").records if r.machinetype == "spot" and r.state is S.STARTING]
    assert len(made) > 2 and {r.zone for r in made} == {"zone-b"}
    assert {m.zone for m in cloud.machines.values() if m.flavor == "m5.large"} == {"zone-b"}
    assert all(f"on {SPOT_B} ({SPOT_A} had no capacity)" in r.reason for r in made)
    assert set(store.load("sp").cooldowns) == {("spot", SPOT_A)}


def test_no_spot_anywhere_falls_to_on_demand_and_the_plan_says_which_offerings_cool(store: Store) -> None:
    """Spot full in both zones: one call reaches each per cooldown window at most (windows of 180 s in nine
    cycles, and the cooldowns double in a row), on-demand takes the machines every cycle, and the plan's reason
    names the cooling offerings."""
    clock, cloud = FakeClock(), FakeConnector(flavors=FLAVORS)
    cloud.full |= {SPOT_A, SPOT_B}
    ctx = zoned(store, clock, cloud)
    calls: dict[tuple[int, str], int] = {}
    reasons: list[str] = []
    for minute in range(9):
        before = len(cloud.created_on)
        report = run_cycle(ctx)
        made = cloud.created_on[before:]
        for key in (SPOT_A, SPOT_B):
            calls[minute // 3, key] = calls.get((minute // 3, key), 0) + made.count(key)
        assert "m5.large@zone-a/on-demand" in made  # the next offering made machines this very cycle
        reasons += [d.reason for d in report.decisions if d.machinetype == "spot" and d.action.value == "create"]
        clock.advance(60)
    assert max(calls.values()) == 1 and calls[0, SPOT_A] == calls[0, SPOT_B] == 1, calls  # a probe per window
    assert any(f"on m5.large@zone-a/on-demand ({SPOT_A}, {SPOT_B} cooling)" in r for r in reasons)
    spot = [r for r in store.load("sp").records if r.machinetype == "spot" and r.state is not S.CREATE_FAILED]
    assert {(r.zone, r.flavor) for r in spot} == {("zone-a", "m5.large")}
    assert "spot" not in store.load("sp").backoffs
    assert any(r.machinetype == "other" for r in store.load("sp").records)  # the other machinetype unaffected

