"""Incremental cycles end to end: the real cycle over the FakeConnector and a real SQLite store.

A steady space's cycles look at no record between full passes, a full pass comes every full_sync_cycles and
after an error, and what only the clock changes (a wallclock passed, a heartbeat gone stale) is still acted on in
the cycles between (core/delta.py, core/counts.py).
"""

from __future__ import annotations

from vctest import config_text, load_text, plain_render

from vcycle.core.model import Heartbeat
from vcycle.core.states import MachineState
from vcycle.errors import CloudUnavailable
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

S = MachineState


def filled(store: Store, machinetype: dict[str, object],
           every: int = 4) -> tuple[SpaceContext, FakeConnector, FakeClock]:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = load_text(config_text(limit=6, settings={"max_create_fraction": 1, "full_sync_cycles": every},
                                   machinetypes={"mt": machinetype}))
    return SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock), cloud, clock


def test_a_steady_space_looks_at_nothing_between_full_passes(store: Store) -> None:
    ctx, cloud, clock = filled(store, {"max_wallclock_seconds": 100_000})
    looked = []
    for _ in range(9):
        report = run_cycle(ctx)
        assert report.ok
        looked.append((report.counts["full_sync"], report.counts["synced_records"]))
        clock.advance(60)
    # the first pass is full; the second sees the six machines it made; then nothing changes until the next full
    assert looked[0] == (1, 0)
    assert looked[1] == (0, 6)
    assert looked[2:4] == [(0, 0), (0, 0)]
    assert looked[4] == (1, 6) and looked[8] == (1, 6)
    assert looked[5:8] == [(0, 0)] * 3
    cloud.inject("list", CloudUnavailable("the API is down"))
    assert not run_cycle(ctx).ok
    clock.advance(60)
    again = run_cycle(ctx)
    assert again.ok and again.counts["full_sync"] == 1  # after an error, a full pass


def test_deadlines_are_met_between_full_passes(store: Store) -> None:
    """A wallclock passed and a heartbeat gone stale in cycles that look at no record: the counts' deadline
    index finds them."""
    ctx, cloud, clock = filled(store, {"max_wallclock_seconds": 1200, "heartbeat_file": "hb",
                                       "heartbeat_seconds": 300, "fizzle_seconds": 60}, every=1000)
    run_cycle(ctx)
    names = sorted(m.name for m in cloud.ours())
    assert len(names) == 6
    for _ in range(4):  # beats every minute: nothing is due
        clock.advance(60)
        store.put_heartbeats([("sp", Heartbeat(n, clock())) for n in names])
        report = run_cycle(ctx)
        assert report.counts["deletes"] == 0 and report.counts["full_sync"] == 0
    silent = names[0]
    for _ in range(6):  # one stops beating: deleted once its heartbeat is older than heartbeat_seconds
        clock.advance(60)
        store.put_heartbeats([("sp", Heartbeat(n, clock())) for n in names if n != silent])
        report = run_cycle(ctx)
        assert report.counts["full_sync"] == 0
        if report.counts["deletes"]:
            break
    assert [d.machine for d in report.decisions if d.action.value == "delete"] == [silent]
    assert {d.rule for d in report.decisions if d.action.value == "delete"} == {"heartbeat"}
    clock.advance(1200)  # past every machine's wallclock
    store.put_heartbeats([("sp", Heartbeat(n, clock())) for n in names])
    report = run_cycle(ctx)
    assert report.counts["full_sync"] == 0
    wallclock = sorted(d.machine for d in report.decisions if d.rule == "wallclock")
    assert wallclock == [n for n in names if n != silent]
    alive = {r.name: r.state for r in store.load("sp").records}
    assert all(alive[n] is S.DELETING for n in wallclock)
