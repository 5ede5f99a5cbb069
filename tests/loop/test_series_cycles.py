"""The status page's time series through real cycles: a point per cycle in the store, kept across a restart and
pruned after history_days."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from vctest import config_text, load_text

from vcycle.core.model import CloudStatus
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.store.series import Series
from vcycle.testing import FakeClock, FakeConnector


def plain_render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
    return b"#!/bin/sh\n"


def test_each_cycle_adds_a_point_that_a_restart_keeps_and_history_days_forgets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    store = Store.open(url)
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = load_text(config_text(limit=3, settings={"max_create_fraction": 1, "history_days": 2}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    start = clock()
    run_cycle(ctx)
    clock.advance(60)
    run_cycle(ctx)
    victim = sorted(m.name for m in cloud.ours())[0]
    cloud.set_status(victim, CloudStatus.STOPPED, "SHUTOFF")  # within fizzle_seconds: an abort
    clock.advance(60)
    run_cycle(ctx)
    store.close()
    store = Store.open(url)  # a restart keeps the plots
    points = Series(store).read("sp", start)
    assert [p[0] for p in points] == [start, start + timedelta(seconds=60), start + timedelta(seconds=120)]
    assert points[0][1] == {"mt": {"starting": 3, "creates": 3}}
    assert points[1][1] == {"mt": {"running": 3}}
    assert points[2][1]["mt"]["aborts"] == 1 and points[2][1]["mt"]["deletes"] == 1
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    clock.advance(3 * 86400)
    run_cycle(ctx)  # the housekeeping pass forgets points older than history_days
    assert [p[0] for p in Series(store).read("sp", start)] == [clock()]
    store.close()


def test_the_housekeeping_merges_the_points_older_than_a_day(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = load_text(config_text(limit=2, settings={"max_create_fraction": 1}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    start = clock()
    for _ in range(40):
        run_cycle(ctx)
        clock.advance(60)
    assert len(Series(store).read("sp", start)) == 40
    clock.advance(86400)
    run_cycle(ctx)  # its housekeeping: the points of the first 40 minutes, one per ten minutes
    points = Series(store).read("sp", start)
    merged = [p for p in points if "" in p[1]]
    assert 4 <= len(merged) <= 5 and sum(p[1][""]["points"] for p in merged) == 40
    assert all(p[1]["mt"]["running"] <= 2 for p in merged) and len(points) == len(merged) + 1
    store.close()


def test_the_planner_gets_each_machinetypes_idle_jobs_of_the_last_cycles(tmp_path: Path) -> None:
    from vcycle.core.model import CycleReport
    from vcycle.loop.cycle import _recent_idle

    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FakeClock()
    config = load_text(config_text(machinetypes={"mt": {"retire_wait_cycles": 2}, "other": {}}))
    ctx = SpaceContext(config, config.spaces["sp"], FakeConnector(clock=clock), store, {}, plain_render, clock)
    store.add_reports([CycleReport("sp", clock() + timedelta(minutes=i), clock(), True,
                                   series={"mt": {"idle": idle}, "other": {}}) for i, idle in enumerate((50, 40, 9))])
    # the longest retire_wait_cycles of the space's machinetypes (3, other's default), oldest first
    assert _recent_idle(ctx) == {"mt": (50, 40, 9), "other": (0, 0, 0)}
    store.close()
