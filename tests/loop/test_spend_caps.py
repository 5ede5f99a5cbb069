"""Spend caps in real cycles: FakeConnector on a FakeClock, a real SQLite store.

The hourly cap bounds the machines made; the month's spend counts the machines gone (in the ledger, once,
when they are accounted) and those alive (from their records), and survives the records' purge; status and
the metrics show it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from vctest import config_text, load_text, plain_render

from vcycle.core.model import CloudStatus
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store, status
from vcycle.store.accounts import Ledger
from vcycle.testing import FakeClock, FakeConnector
from vcycle.web.metrics import Metrics

START = datetime(2026, 3, 1, tzinfo=UTC)


def site(store: Store, clock: FakeClock, cloud: FakeConnector, **space: object) -> SpaceContext:
    config = load_text(config_text(limit=100, settings={"max_create_fraction": 1}, space={
        "offering_prices": "m5.large/spot=0.25", "max_cost_per_hour": 2.0, "cleanup_hours": 1, **space},
        machinetypes={"mt": {"target_share": 1, "flavor_names": "m5.large", "capacity_types": "spot on-demand",
                             "price_per_hour": 0.5, "fizzle_seconds": 0}}))
    return SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)


def test_the_hourly_cap_bounds_the_machines_and_the_month_is_counted_once(store: Store) -> None:
    clock = FakeClock(START + timedelta(days=3))
    cloud = FakeConnector(clock=clock, flavors={"m5.large": 2})
    cloud.full.add("m5.large/spot")  # no spot: every machine on-demand, at the machinetype's 0.5 an hour
    ctx = site(store, clock, cloud)
    report = run_cycle(ctx)
    assert report.counts["creates"] == 4  # 4 x 0.5 = the cap of 2.0
    assert any(d.rule == "cost_cap" and "would pass 2.000" in d.reason for d in report.decisions)
    assert {r.capacity for r in store.load("sp").records} == {"on-demand"}
    clock.advance(3600)
    report = run_cycle(ctx)
    assert report.spend == {"month": "2026-03", "to_date": pytest.approx(2.0), "burn_per_hour": 2.0,
                            "projected_month": pytest.approx(2.0 + 2.0 * (28 * 24 - 1)),
                            "unpriced_machines": 0}
    for machine in cloud.ours():
        cloud.set_status(machine.name, CloudStatus.STOPPED)
    run_cycle(ctx)  # deleted
    for machine in cloud.ours():
        cloud.vanish(machine.name)
    clock.advance(1800)
    run_cycle(ctx)  # gone and accounted: 4 machines of about 1.5 hours, and 4 new ones
    assert Ledger(store).spent("2026-03")["sp"] == pytest.approx(4 * 0.5 * 1.5, abs=0.01)
    clock.advance(2 * 3600)
    report = run_cycle(ctx)  # the gone ones purged: their cost stays in the ledger
    assert all(r.accounted_at is None for r in store.load("sp").records)
    assert report.spend is not None
    assert report.spend["to_date"] == pytest.approx(3.0 + 4 * 0.5 * 2.0, abs=0.02)  # the new ones, 2 hours
    shown = status.collect(ctx.config, store, clock())["spaces"]["sp"]["spend"]
    assert shown["to_date"] == report.spend["to_date"] and shown["max_cost_per_hour"] == 2.0


def test_a_create_counts_at_its_dearest_fallback_until_the_listing_tells_and_the_metrics_show_it(
        store: Store) -> None:
    """Spot at 0.25 may fall through to on-demand at 0.5: each create is counted at 0.5 in its cycle, so the
    burn never passes the cap whichever the cloud makes; the next cycles fill the room that spot left."""
    clock = FakeClock(START)
    cloud = FakeConnector(clock=clock, flavors={"m5.large": 2})
    ctx = site(store, clock, cloud)
    burns = []
    for _ in range(6):
        report = run_cycle(ctx)
        assert report.spend is not None
        burns.append(report.spend["burn_per_hour"])
        clock.advance(600)
    assert burns == [0.0, 1.0, 1.5, 1.75, 2.0, 2.0]  # 4, 2, 1, then 1 without its dear fallback
    assert len(cloud.ours()) == 8
    from vcycle.web.directory import Directory

    metrics = Metrics(Directory(store), clock)
    metrics.observe_reports(store.last_reports(), {"sp": "fake"})
    text = metrics.render().decode()
    assert 'vcycle_spend_burn_per_hour{space="sp"} 2.0' in text  # 8 spot machines at 0.25
    assert 'vcycle_spend_month_to_date{space="sp"}' in text
