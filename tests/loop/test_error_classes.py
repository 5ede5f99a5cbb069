"""Error classes decide the response, through real cycles: FakeConnector on a FakeClock with a real SQLite store.

A cloud asking to slow down (Throttled) gets one call of the cycle and then none for its Retry-After; a spent
quota (QuotaExceeded) holds creates of that size until a listing shows room, and smaller ones go on; neither
backs the machinetype off. A transient answer (CloudUnavailable) is asked again within the call after a
jittered wait; one that lasts leaves the request to the next sync.
"""

from __future__ import annotations

import logging

import pytest
from vctest import config_text, load_text, plain_render

from vcycle.core.model import CloudStatus
from vcycle.core.states import MachineState
from vcycle.errors import CloudUnavailable, QuotaExceeded, Throttled
from vcycle.loop.cycle import SpaceContext, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector

S = MachineState


def calls(cloud: FakeConnector, op: str) -> int:
    return sum(1 for o, _ in cloud.calls if o == op)


def context(store: Store, clock: FakeClock, cloud: FakeConnector, **machinetypes: dict[str, object]) -> SpaceContext:
    config = load_text(config_text(limit=40, settings={"max_create_fraction": 1}, machinetypes=machinetypes or {
        "mt": {"target_share": 1, "backoff_seconds": 600}}))
    return SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)


def test_a_throttled_create_stops_the_cycles_calls_and_the_space_waits_its_retry_after(store: Store) -> None:
    clock, cloud = FakeClock(), FakeConnector()
    cloud.inject("create", Throttled("RunInstances: RequestLimitExceeded: Request limit exceeded.", 150), 1)
    ctx = context(store, clock, cloud)
    report = run_cycle(ctx)
    assert calls(cloud, "create") == 1  # the others of the cycle never called the cloud
    assert {e.kind for e in report.errors} == {"create_refused_throttled"}
    assert {r.state for r in store.load("sp").records} == {S.CREATE_FAILED}  # nothing was made: closed at once
    assert "mt" not in store.load("sp").backoffs  # the space's pace, not the machinetype's fault
    listed = calls(cloud, "list")
    for _ in range(2):  # 60 s and 120 s later: within its Retry-After, no call at all
        clock.advance(60)
        skipped = run_cycle(ctx)
        assert [e.kind for e in skipped.errors] == ["throttled"]
        message = skipped.errors[0].message
        assert "RequestLimitExceeded" in message and "no call to it until" in message
    assert calls(cloud, "list") == listed
    clock.advance(60)  # 180 s: past it
    again = run_cycle(ctx)
    assert again.ok and calls(cloud, "create") > 1


def test_a_throttled_listing_skips_the_space_for_a_cycle_where_no_retry_after_is_named(store: Store) -> None:
    clock, cloud = FakeClock(), FakeConnector()
    cloud.inject("list", Throttled("list servers: 429 Rate limit exceeded"), 1)
    ctx = context(store, clock, cloud)
    assert [e.kind for e in run_cycle(ctx).errors] == ["space_skipped"]
    clock.advance(30)  # within cycle_seconds 60
    assert [e.kind for e in run_cycle(ctx).errors] == ["throttled"]
    assert calls(cloud, "list") == 1
    clock.advance(30)
    assert run_cycle(ctx).ok


class Quota(FakeConnector):
    """A cloud whose quota holds three machines: a fourth create is refused (as Nova's 403 for cores)."""

    cap = 3

    def create_machine(self, spec):  # type: ignore[no-untyped-def]
        alive = [m for m in self.ours() if m.status is not CloudStatus.DELETED]
        if len(alive) >= self.cap:
            self.calls.append(("create", spec.name))
            raise QuotaExceeded(f"create server: 403 Quota exceeded for cores: Requested {spec.processors}, but "
                                f"already used {4 * len(alive)} of {4 * self.cap} cores")
        return super().create_machine(spec)


def test_a_spent_quota_holds_creates_of_its_size_until_a_listing_shows_room(store: Store) -> None:
    clock, cloud = FakeClock(), Quota(flavors={"big": 4})
    config = load_text(config_text(limit=40, settings={"max_create_fraction": 1, "create_workers": 1},
                                   machinetypes={"big": {"target_share": 1, "flavor_names": "big",
                                                         "min_processors": 4, "backoff_seconds": 600,
                                                         "fizzle_seconds": 0}}))
    ctx = SpaceContext(config, config.spaces["sp"], cloud, store, {}, plain_render, clock)
    report = run_cycle(ctx)
    assert len(cloud.ours()) == 3 and calls(cloud, "create") == 4  # the fourth call was refused; no more calls
    refused = [e for e in report.errors if e.kind == "create_refused_quota"]
    assert len(refused) == 7 and all("Quota exceeded for cores" in e.message for e in refused)
    assert "big" not in store.load("sp").backoffs  # the space's quota: no backoff
    clock.advance(60)
    report = run_cycle(ctx)
    (hold,) = [d for d in report.decisions if d.rule == "quota"]
    assert "refused a create of 4 processors 60s ago with 12 held" in hold.reason
    assert "until a listing shows fewer than 12 held" in hold.reason and calls(cloud, "create") == 4
    cloud.set_status(cloud.ours()[0].name, CloudStatus.STOPPED)  # a machine ends
    clock.advance(60)
    run_cycle(ctx)  # it is deleted, and held until the cloud lists it no more
    assert calls(cloud, "create") == 4
    clock.advance(60)
    report = run_cycle(ctx)  # the listing shows 8 held, fewer than 12: the hold ends, and the room is taken
    assert calls(cloud, "create") >= 5
    assert len([m for m in cloud.ours() if m.status is not CloudStatus.DELETED]) == 3


def test_a_lasting_transient_create_failure_is_left_to_the_next_sync_and_backs_nothing_off(store: Store) -> None:
    """Every try of the call fails (vcycle/loop/retry.py asks three times): the request waits for the sync."""
    clock, cloud = FakeClock(), FakeConnector()
    cloud.inject("create", CloudUnavailable("RunInstances: 503: Service Unavailable"), 3)
    ctx = context(store, clock, cloud)
    report = run_cycle(ctx)
    assert "create_not_confirmed" in {e.kind for e in report.errors}
    assert S.REQUESTED in {r.state for r in store.load("sp").records}  # may yet have been made: sync decides
    assert "mt" not in store.load("sp").backoffs
    before = calls(cloud, "create")
    clock.advance(60)
    run_cycle(ctx)
    assert calls(cloud, "create") > before  # the next cycle creates again


def test_a_transient_create_failure_is_asked_again_within_the_call_and_the_machine_made_this_cycle(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """One 503: the create is sent again (same name and request id) after a jittered wait, and the machine is
    STARTING after this very cycle; no request waits for the next sync."""
    import dataclasses

    from vcycle.loop.retry import Retry

    clock, cloud = FakeClock(), FakeConnector()
    cloud.inject("create", CloudUnavailable("RunInstances: 503: Service Unavailable"), 1)
    waits: list[float] = []
    ctx = dataclasses.replace(context(store, clock, cloud), retry=Retry(sleep=waits.append))
    with caplog.at_level(logging.WARNING):
        report = run_cycle(ctx)
    assert not [e for e in report.errors if e.kind == "create_not_confirmed"]
    made = store.load("sp").records
    assert made and {r.state for r in made} == {S.STARTING}
    assert calls(cloud, "create") == len(made) + 1 and len(waits) == 1 and 0 <= waits[0] <= 0.25
    assert "transient answer (RunInstances: 503: Service Unavailable), asked again in" in caplog.text
