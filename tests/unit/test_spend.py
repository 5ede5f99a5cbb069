"""Spend caps (core/spend.py and the planner): prices per offering, the cost of a machine's life by month, the
hourly cap, the paced monthly budgets, and the cheapest offering per hs06 tried first."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vctest import T0, config_text, load_text, rec

from vcycle.core import spend
from vcycle.core.model import Demand, MachineRecord, Offering, SpaceSnapshot, Spend, StatusChange
from vcycle.core.planner import plan
from vcycle.core.states import MachineState
from vcycle.errors import ConfigError

S = MachineState
PRICES = "m5.large=0.10 m5.large/spot=0.04 m5.large@za/spot=0.03 */spot=0.05"


def space_with(machinetype: dict[str, object] | None = None, space: dict[str, object] | None = None,
               settings_: dict[str, object] | None = None, limit: int = 1000):  # type: ignore[no-untyped-def]
    config = load_text(config_text(limit=limit, machinetypes={"mt": {"target_share": 1, **(machinetype or {})}},
                                   space=space, settings=settings_))
    return config, config.spaces["sp"]


def test_the_most_specific_price_wins_then_the_machinetype_s_own() -> None:
    _, sp = space_with({"price_per_hour": 0.5}, {"offering_prices": PRICES})
    mt = sp.machinetypes["mt"]
    assert spend.price(sp, mt, Offering("m5.large")) == 0.10
    assert spend.price(sp, mt, Offering("m5.large", "zb", "on-demand")) == 0.10
    assert spend.price(sp, mt, Offering("m5.large", "zb", "spot")) == 0.04  # flavor and capacity beat capacity alone
    assert spend.price(sp, mt, Offering("m5.large", "za", "spot")) == 0.03
    assert spend.price(sp, mt, Offering("c5.large", None, "spot")) == 0.05  # */spot
    assert spend.price(sp, mt, Offering("c5.large")) == 0.5  # no pattern: price_per_hour
    _, bare = space_with()
    assert spend.price(bare, bare.machinetypes["mt"], Offering("c5.large")) is None


@pytest.mark.parametrize(("value", "words"), [
    ("m5.large", "is not OFFERING=PRICE"),
    ("m5.large=cheap", "'cheap' is not a price"),
    ("m5.large=-1", "a price is a finite number, 0 or more"),
    ("m5.large=0.1 m5.large=0.2", "'m5.large' is priced twice"),
])
def test_bad_prices_are_refused_naming_file_section_and_key(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(config_text(space={"offering_prices": value}))
    found = [(p.section, p.key, p.message) for p in caught.value.problems]
    assert any(section == "space sp" and key == "offering_prices" and words in message
               for section, key, message in found), found
    assert all(p.file for p in caught.value.problems)


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(config_text(space={"max_cost_per_hour": "-3"}, settings={"budget_per_month": "x"}))
    keys = {(p.section, p.key) for p in caught.value.problems}
    assert {("space sp", "max_cost_per_hour"), ("settings", "budget_per_month")} <= keys


def gone(name: str, created: datetime, ended: datetime, **extra: object):  # type: ignore[no-untyped-def]
    return dataclasses.replace(rec(name, S.GONE, created=created, **extra), last=StatusChange(S.GONE, ended, "gone"))


def test_a_machine_costs_from_its_creation_until_gone_split_by_month() -> None:
    created = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
    machine = gone("m1", created, created + timedelta(hours=5))
    assert spend.by_month(machine, 0.5) == {"2026-11": pytest.approx(1.0), "2026-12": pytest.approx(1.5)}
    alive = rec("m2", S.RUNNING, created=created)
    assert spend.by_month(alive, 0.5) == {}  # still costing: priced from its record until it is gone
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    start, end = spend.month(now)
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert spend.cost(alive, 0.5, start, now) == pytest.approx(1.0)  # December's two hours only


def test_the_paced_rate_is_what_is_left_over_what_is_left_of_the_month() -> None:
    mid = datetime(2026, 4, 16, tzinfo=UTC)  # 15 of April's 30 days left
    assert spend.paced(720.0, 360.0, mid) == pytest.approx(360.0 / (15 * 24))
    assert spend.paced(720.0, 800.0, mid) == 0.0  # overspent: nothing more


def test_the_hourly_cap_refuses_the_create_that_would_pass_it_naming_the_numbers() -> None:
    config, _ = space_with({"price_per_hour": 0.4}, {"max_cost_per_hour": "1.0"})
    running = tuple(rec(f"r{i}", S.RUNNING) for i in range(2))  # 0.8 an hour
    result = plan(SpaceSnapshot("sp", running), {}, config, T0)
    assert result.creates == ()
    (held,) = [d for d in result.decisions if d.rule == "cost_cap"]
    assert "burning 0.800 an hour, 0.4 more for this machine would pass 1.000" in held.reason
    assert "max_cost_per_hour 1 of space sp" in held.reason
    fewer = plan(SpaceSnapshot("sp", running[:1]), {}, config, T0)
    assert len(fewer.creates) == 1 and "0.4 an hour" in fewer.creates[0].reason


def test_a_cap_without_a_price_makes_nothing_and_says_which_key() -> None:
    config, _ = space_with(space={"budget_per_month": "100"})
    result = plan(SpaceSnapshot("sp", ()), {}, config, T0)
    assert result.creates == ()
    assert any(d.rule == "no_price" and "budget_per_month caps" in d.reason for d in result.decisions)


def test_without_caps_or_prices_nothing_changes() -> None:
    config, _ = space_with()
    assert spend.Caps.of(config.spaces["sp"], config.settings, None, (), T0) is None
    assert len(plan(SpaceSnapshot("sp", ()), {}, config, T0).creates) == 100


def test_the_cheapest_offering_per_hs06_goes_first_where_all_are_priced() -> None:
    config, _ = space_with({"flavor_names": "big small", "max_processors": 4, "hs06_per_processor": 10},
                           {"offering_prices": "big=0.30 small=0.20"})
    flavors = {"big": 4, "small": 2}  # big: 0.0075 per hs06, small: 0.01
    order = plan(SpaceSnapshot("sp", (), flavors=flavors), {}, config, T0).creates[0]
    assert order.flavor == "big"
    partly, _ = space_with({"flavor_names": "big small", "max_processors": 4}, {"offering_prices": "small=0.01"})
    assert plan(SpaceSnapshot("sp", (), flavors=flavors), {}, partly, T0).creates[0].flavor == "big"  # as listed


def test_a_fallback_the_cap_would_not_allow_is_left_out() -> None:
    config, _ = space_with({"flavor_names": "m5", "zones": "za zb", "capacity_types": "spot"},
                           {"offering_prices": "m5@za/spot=0.1 m5@zb/spot=0.9", "max_cost_per_hour": "0.5"})
    order = plan(SpaceSnapshot("sp", ()), {}, config, T0).creates[0]
    assert order.offering.key == "m5@za/spot" and order.fallbacks == ()


def test_the_site_budget_is_split_between_the_spaces_that_share_it() -> None:
    config, _ = space_with({"price_per_hour": 1.0}, settings_={"budget_per_month": 744 * 4})  # 4 an hour in January
    month_start = datetime(2026, 1, 1, tzinfo=UTC)
    alone = plan(SpaceSnapshot("sp", (), spend=Spend(0.0, 0.0, 0.0, 1)), {}, config, month_start)
    assert len(alone.creates) == 4
    shared = plan(SpaceSnapshot("sp", (), spend=Spend(0.0, 0.0, 2.0, 2)), {}, config, month_start)
    assert len(shared.creates) == 1  # (4 - 2 burnt elsewhere) / 2 spaces
    assert any(d.rule == "site_budget_pace" and "2.000 burnt elsewhere" in d.reason for d in shared.decisions)


# --- invariants -------------------------------------------------------------------------------

prices = st.sampled_from([0.05, 0.1, 0.25, 0.4, 1.0])


@settings(max_examples=200, deadline=None)
@given(cap=st.floats(0.0, 20.0), running=st.lists(prices, max_size=30), price=prices,
       demand=st.integers(0, 200))
def test_the_projected_burn_never_exceeds_the_cap(cap: float, running: list[float], price: float,
                                                   demand: int) -> None:
    """Whatever runs and whatever the demand: the burn after this cycle's creates stays within
    max_cost_per_hour, or no create is made where it was above already."""
    config = load_text(config_text(limit=1000, space={"max_cost_per_hour": cap, "offering_prices":
                                                      " ".join(f"f{i}={p}" for i, p in enumerate(running)) or "x=1"},
                                   machinetypes={"mt": {"target_share": 1, "price_per_hour": price,
                                                        "demand": "q"}},
                                   extra="[demand q]\ntype = file\npath = /dev/null\n"))
    records = tuple(rec(f"r{i}", S.RUNNING, flavor=f"f{i}") for i in range(len(running)))
    result = plan(SpaceSnapshot("sp", records), {"mt": Demand(idle_jobs=demand)}, config, T0)
    burn = sum(running) + price * len(result.creates)
    assert not result.creates or burn <= cap + 1e-9


@settings(max_examples=60, deadline=None)
@given(budget=st.floats(10.0, 2000.0), price=prices, lifetimes=st.lists(st.integers(1, 96), min_size=1, max_size=8),
       demand=st.lists(st.integers(0, 40), min_size=1, max_size=10))
def test_pacing_never_spends_more_than_its_share_and_one_machine_hour(
        budget: float, price: float, lifetimes: list[int], demand: list[int]) -> None:
    """A month of hourly cycles: machines live a few hours each, the demand changes; at every hour the money
    spent is at most the month's elapsed share of the budget plus one machine-hour."""
    config = load_text(config_text(limit=10_000, space={"budget_per_month": budget},
                                   settings={"max_create_fraction": 1},
                                   machinetypes={"mt": {"target_share": 1, "price_per_hour": price,
                                                        "demand": "q"}},
                                   extra="[demand q]\ntype = file\npath = /dev/null\n"))
    sp = config.spaces["sp"]
    start, end = spend.month(datetime(2026, 2, 10, tzinfo=UTC))
    hours = int((end - start).total_seconds() // 3600)
    alive: list[tuple[MachineRecord, datetime]] = []  # record, when it ends
    spent_gone = 0.0
    made = 0
    for hour in range(hours):
        now = start + timedelta(hours=hour)
        for record, ends in [a for a in alive if a[1] <= now]:
            alive.remove((record, ends))
            spent_gone += spend.cost(record, price, start, ends)
        records = tuple(r for r, _ in alive)
        to_date = spent_gone + sum(spend.cost(r, price, start, now) for r in records)
        share = budget * hour / hours
        assert to_date <= share + price + 1e-6, (hour, to_date, share)
        wanted = Demand(idle_jobs=demand[hour % len(demand)] + len(records))
        result = plan(SpaceSnapshot("sp", records, spend=Spend(to_date, to_date)), {"mt": wanted}, config, now)
        for _ in result.creates:
            made += 1
            machine = rec(f"m{made}", S.RUNNING, created=now)
            alive.append((machine, now + timedelta(hours=lifetimes[made % len(lifetimes)])))
    assert sp.budget_per_month == budget


def test_the_cloud_s_current_price_stands_above_the_configured_one() -> None:
    config, sp = space_with({"flavor_names": "m5", "zones": "za zb", "capacity_types": "spot"},
                            {"offering_prices": "*/spot=0.9", "max_cost_per_hour": "1.0"})
    mt = sp.machinetypes["mt"]
    live = {"m5@zb/spot": 0.2}
    assert spend.price(sp, mt, Offering("m5", "zb", "spot"), live) == 0.2
    assert spend.price(sp, mt, Offering("m5", "za", "spot"), live) == 0.9  # not told: the configured estimate
    result = plan(SpaceSnapshot("sp", (), prices=live), {}, config, T0)
    (order,) = result.creates  # the cheaper zone first; counted at its dearer fallback, 0.9: one under 1.0
    assert order.offering.key == "m5@zb/spot" and [o.key for o in order.fallbacks] == ["m5@za/spot"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 90 * 24), st.one_of(st.none(), st.integers(0, 48)),
                          st.sampled_from([None, 0.05, 0.5])), max_size=12),
       st.lists(st.integers(0, 40 * 24), min_size=2, max_size=8))
def test_a_standing_carried_forward_costs_what_a_fresh_count_does(
        machines: list[tuple[int, int | None, float | None]], hours: list[int]) -> None:
    """Carried from cycle to cycle while the records stand, the month's cost is the fresh count's; it is not
    carried to another month, to other records or to an earlier time."""
    _, space = space_with({"price_per_hour": 0.1})
    start = datetime(2026, 10, 1, tzinfo=UTC)
    records = tuple(
        (gone(f"m{i}", start + timedelta(hours=h), start + timedelta(hours=h + life))
         if life is not None else rec(f"m{i}", S.RUNNING, created=start + timedelta(hours=h)))
        if price is None else
        dataclasses.replace(rec(f"m{i}", S.RUNNING, created=start + timedelta(hours=h)), flavor=f"f{price}")
        for i, (h, life, price) in enumerate(machines))
    space = dataclasses.replace(space, offering_prices=(
        (Offering("f0.05"), 0.05), (Offering("f0.5"), 0.5)))
    standing = None
    for hour in sorted(hours):
        now = start + timedelta(days=93, hours=hour)  # after every machine was made and every gone one went
        fresh = spend.Standing.of(space, records, now)
        carried = standing.carried(records, now, None) if standing is not None else None
        if carried is not None:
            assert carried.start == fresh.start
            assert (carried.spent, carried.burn, carried.unpriced) == (
                pytest.approx(fresh.spent, rel=1e-9, abs=1e-9), fresh.burn, fresh.unpriced)
        else:  # not carried only into another month (every machine began and ended before ``now``: steady)
            assert standing is None or (standing.steady and standing.start != fresh.start)
        standing = carried or fresh
    if standing is not None:
        assert standing.carried(list(records), standing.at, None) is None  # other records (not the same object)
        assert standing.carried(records, standing.at - timedelta(seconds=1), None) is None  # earlier
        assert standing.carried(records, standing.at, {"x": 1.0}) is None  # other prices


def test_a_standing_is_not_carried_past_a_machine_made_after_it() -> None:
    _, space = space_with({"price_per_hour": 1.0})
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    records = (rec("m1", S.RUNNING, created=now + timedelta(hours=1)),)  # a clock ahead of this host's
    standing = spend.Standing.of(space, records, now)
    assert standing.spent == 0.0 and not standing.steady
    later = now + timedelta(hours=2)
    assert standing.carried(records, later, None) is None
    assert spend.Standing.of(space, records, later).spent == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["new", "gone", "accounted", "forgotten"]),
                                   st.sampled_from([None, 0.05, 0.5])), max_size=4), min_size=1, max_size=40))
def test_a_standing_moved_by_the_records_that_changed_costs_what_a_fresh_count_does(
        steps: list[list[tuple[int, str, float | None]]]) -> None:
    """A cycle's records change a few at a time (a machine made, gone, accounted, forgotten), the others are the
    very objects of the last cycle: moved by the changed ones, the month's standing is the fresh count's (of the
    records not accounted yet), whatever the prices; counted afresh at least every MOVES moves."""
    _, space = space_with({"price_per_hour": 0.1})
    space = dataclasses.replace(space, offering_prices=((Offering("f0.05"), 0.05), (Offering("f0.5"), 0.5)))
    start = datetime(2026, 10, 1, tzinfo=UTC)
    records: dict[str, MachineRecord] = {}
    standing = None
    for n, changes in enumerate(steps):
        now = start + timedelta(hours=1 + n)
        for slot, change, price in changes:
            name, old = f"m{slot}", records.get(f"m{slot}")
            if change == "new" or old is None:
                made = rec(name, S.RUNNING, created=now - timedelta(minutes=30))
                records[name] = made if price is None else dataclasses.replace(made, flavor=f"f{price}")
            elif change == "gone" and old.state is S.RUNNING:
                records[name] = dataclasses.replace(old, state=S.GONE, last=StatusChange(S.GONE, now, "gone"))
            elif change == "accounted" and old.state is S.GONE:
                records[name] = dataclasses.replace(old, accounted_at=now)
            elif change == "forgotten":
                del records[name]
        given_ = tuple(records.values())
        fresh = spend.Standing.of(space, given_, now, unaccounted=True)
        found = None
        if standing is not None:
            found = standing.carried(given_, now, None) or standing.moved(space, given_, now, None)
        assert found is None or found.moves <= spend.MOVES
        standing = found or fresh
        assert (standing.spent, standing.burn, standing.unpriced, standing.steady) == (
            pytest.approx(fresh.spent, rel=1e-9, abs=1e-9), pytest.approx(fresh.burn, abs=1e-9), fresh.unpriced,
            fresh.steady)


def test_a_standing_moves_by_one_machine_and_is_counted_afresh_after_moves() -> None:
    _, space = space_with({"price_per_hour": 1.0})
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    records = tuple(rec(f"m{i}", S.RUNNING, created=now - timedelta(hours=2)) for i in range(4))
    standing = spend.Standing.of(space, records, now, unaccounted=True)
    assert (standing.spent, standing.burn) == (pytest.approx(8.0), 4.0)
    for n in range(1, spend.MOVES + 1):
        now += timedelta(hours=1)
        ended = dataclasses.replace(records[0], state=S.GONE, last=StatusChange(S.GONE, now, "gone"))
        records = (*records[1:], ended, rec(f"n{n}", S.RUNNING, created=now))  # one gone, one made
        found = standing.moved(space, records, now, None)
        assert found is not None and found.moves == n
        fresh = spend.Standing.of(space, records, now, unaccounted=True)
        assert (found.spent, found.burn) == (pytest.approx(fresh.spent), fresh.burn)
        standing = found
    assert standing.moves == spend.MOVES
    assert standing.moved(space, records, now, None) is None  # counted afresh now
    again = tuple(dataclasses.replace(r) for r in records)  # every record a new object
    assert spend.Standing.of(space, records, now).moved(space, again, now, None) is None


def test_a_standing_moved_past_its_last_burning_machine_burns_nothing() -> None:
    """Prices whose sum is not exact in binary (0.1 + 0.2): once every machine that burned has gone, the moved
    standing burns exactly nothing, not the sum's rounding (which status would show as a tiny or -0.0 burn)."""
    _, space = space_with({"price_per_hour": 0.1})
    space = dataclasses.replace(space, offering_prices=((Offering("f0.2"), 0.2),))
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    accounted = tuple(dataclasses.replace(gone(f"k{i}", now - timedelta(hours=3), now - timedelta(hours=2)),
                                          accounted_at=now) for i in range(3))
    alive = (rec("a", S.RUNNING, created=now - timedelta(hours=1)),
             dataclasses.replace(rec("b", S.RUNNING, created=now - timedelta(hours=1)), flavor="f0.2"))
    standing = spend.Standing.of(space, (*accounted, *alive), now, unaccounted=True)
    assert standing.burn == 0.1 + 0.2 != 0.3  # the sum as counted
    later = now + timedelta(hours=1)
    ended = tuple(dataclasses.replace(r, state=S.GONE, last=StatusChange(S.GONE, later, "gone"), accounted_at=later)
                  for r in alive)
    moved = standing.moved(space, (*accounted, *ended), later, None)
    assert moved is not None and moved.moves == 1
    assert moved.burn == 0.0  # exactly
    assert 0.0 <= moved.spent < 1e-9  # both gone and accounted: the ledger holds their cost now
