"""Launch health through real cycles: FakeConnector on a FakeClock with a real SQLite store.

A machinetype whose creates the cloud refuses turns unhealthy; it then makes one probe machine per
offering_cooldown_seconds, while another machinetype creates as before; a probe that reaches work makes it
healthy again, and it fills up at once. Status and the metrics show it, with why.
"""

from __future__ import annotations

from vctest import config_text, load_text, plain_render

from vcycle.errors import LaunchRejected
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector


class Refusing(FakeConnector):
    """Refuses every create of machinetype ``sick`` while ``refusing`` is set (as for an image gone)."""

    refusing = True

    def create_machine(self, spec):  # type: ignore[no-untyped-def]
        if spec.machinetype == "sick" and self.refusing:
            self.calls.append(("create", spec.name))
            raise LaunchRejected("image ami-0gone does not exist")
        return super().create_machine(spec)


def creates_of(cloud: FakeConnector, machinetype: str) -> int:
    return sum(1 for op, name in cloud.calls if op == "create" and f"-{machinetype}-" in name)


def test_an_unhealthy_machinetype_makes_one_probe_per_cooldown_until_one_works(store: Store) -> None:
    from vcycle.store.status import collect
    from vcycle.web.directory import Directory
    from vcycle.web.metrics import Metrics

    clock = FakeClock()
    cloud = Refusing(clock=clock, boot_seconds=30)
    config = load_text(config_text(limit=400, settings={"max_create_fraction": 0.02}, machinetypes={
        "sick": {"target_share": 1, "backoff_seconds": 0}, "well": {"target_share": 1, "backoff_seconds": 0}}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    run_cycle(ctx)  # the first cycle's creates of sick are all refused: 2 of the last 4 failed at least
    first = creates_of(cloud, "sick")
    assert first >= 2
    tries, held = [], []
    for minute in range(1, 10):  # a cycle a minute
        clock.advance(60)
        before = creates_of(cloud, "sick")
        report = run_cycle(ctx)
        if creates_of(cloud, "sick") > before:
            tries.append((minute, creates_of(cloud, "sick") - before))
        held += [d.reason for d in report.decisions if d.rule == "launch_health" and d.machinetype == "sick"]
    assert tries == [(3, 1), (6, 1), (9, 1)]  # one probe per offering_cooldown_seconds 180, each refused
    assert held and "launches failed (launch_health_failures 2 of launch_health_window 4)" in held[0]
    assert "image ami-0gone does not exist" in held[0] and "the next at" in held[0]
    assert creates_of(cloud, "well") > 10  # the other machinetype created as before
    shown = collect(config, store, clock())["spaces"]["sp"]["unhealthy"]
    assert [s["machinetype"] for s in shown] == ["sick"] and "image ami-0gone" in shown[0]["reason"]
    metrics = Metrics(Directory(store), clock)
    metrics.observe_health({"sp": {s["machinetype"]: s["reason"] for s in shown}})
    assert b'vcycle_launch_unhealthy{machinetype="sick",space="sp"} 1.0' in metrics.render()

    cloud.refusing = False  # the image is back: the next probe reaches work (it runs: no heartbeat expected)
    made = []
    for _ in range(8):
        clock.advance(60)
        before = creates_of(cloud, "sick")
        run_cycle(ctx)
        made.append(creates_of(cloud, "sick") - before)
    assert made[:2] == [0, 0] and made[2] == 1  # the probe, at its time
    assert sum(made[3:]) > 1  # it reached work: healthy, and the machinetype fills up again
    assert collect(config, store, clock())["spaces"]["sp"]["unhealthy"] == []
    metrics.observe_health({})
    assert b'vcycle_launch_unhealthy{machinetype="sick",space="sp"} 0.0' in metrics.render()


def test_launch_outcomes_are_written_with_the_cycle_s_outcomes(store: Store) -> None:
    """A cycle whose creates are refused tells launch outcomes: they are kept by the executor's own write of the
    outcomes, not by a write of their own (two writes for the cycle: the intent, then the outcomes)."""
    clock = FakeClock()
    cloud = Refusing(clock=clock, boot_seconds=30)
    config = load_text(config_text(limit=4, machinetypes={"sick": {"target_share": 1, "backoff_seconds": 0}}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    writes: list[dict[str, object]] = []
    original = store.write

    def counted(*args: object, **kwargs: object) -> int:
        writes.append(kwargs)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    store.write = counted  # type: ignore[method-assign]
    run_cycle(ctx)
    assert creates_of(cloud, "sick") >= 1
    assert len(writes) == 2 and not writes[0].get("launches")
    kept = store.load("sp").launches["sick"]
    assert kept and not any(o.ok for o in kept) and writes[1]["launches"] == {"sick": kept}
