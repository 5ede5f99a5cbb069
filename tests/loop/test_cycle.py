"""The cycle and the executor against the FakeConnector and a real SQLite store."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from vctest import config_text, load_text, plain_render

from vcycle.core.model import CloudStatus, Heartbeat
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.demand import make_source
from vcycle.errors import CloudUnavailable, LaunchRejected, Unauthorized
from vcycle.loop.cycle import SpaceContext, run_all, run_cycle
from vcycle.store import Store
from vcycle.testing import FakeClock, FakeConnector
from vcycle.userdata.render import RenderError

S = MachineState


def context(config: Config, store: Store, cloud: FakeConnector, clock: FakeClock, space: str = "sp",
            render: Any = plain_render) -> SpaceContext:
    sources = {name: make_source(d, config.spaces) for name, d in config.demands.items()}
    return SpaceContext(config, config.spaces[space], cloud, store, sources, render, clock)


def states(store: Store, space: str = "sp") -> dict[str, int]:
    result: dict[str, int] = {}
    for record in store.load(space).records:
        result[record.state.value] = result.get(record.state.value, 0) + 1
    return result


def test_intent_is_committed_before_the_create_call(store: Store) -> None:
    clock = FakeClock()
    seen_at_create: list[list[str]] = []

    class Watching(FakeConnector):
        def create_machine(self, spec):  # type: ignore[no-untyped-def]
            seen_at_create.append([f"{r.name}:{r.state.value}" for r in store.load("sp").records
                                   if r.name == spec.name])
            return super().create_machine(spec)

    cloud = Watching(clock=clock)
    report = run_cycle(context(load_text(config_text(limit=2, settings={"max_create_fraction": 1})), store, cloud,
                               clock))
    assert report.ok and report.counts["creates"] == 2
    assert all(len(seen) == 1 and seen[0].endswith(":requested") for seen in seen_at_create)
    assert states(store) == {"starting": 2}
    tagged = {m.name: m.owner for m in cloud.ours()}
    for record in store.load("sp").records:
        assert tagged[record.name] is not None and tagged[record.name].request_id == record.request_id


def test_machines_live_their_life_through_cycles(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock, boot_seconds=30)
    ctx = context(load_text(config_text(limit=1)), store, cloud, clock)
    run_cycle(ctx)
    (name,) = [m.name for m in cloud.ours()]
    clock.advance(60)
    run_cycle(ctx)
    assert states(store) == {"running": 1}
    store.put_heartbeats([("sp", Heartbeat(name, clock(), "200 Success", clock()))])
    cloud.set_status(name, CloudStatus.STOPPED, "SHUTOFF")
    clock.advance(60)
    report = run_cycle(ctx)
    assert report.counts["deletes"] == 1 and cloud.ours() == []
    clock.advance(60)
    run_cycle(ctx)
    assert [(h.state, h.reason[:25]) for h in store.history("sp", name)] == [
        (S.REQUESTED, "intent: lowest weighted c"), (S.STARTING, "create accepted by the cl"),
        (S.RUNNING, "cloud reports running (RU"), (S.STOPPED, "cloud reports stopped (SH"),
        (S.DELETING, "delete: machine shut down"), (S.GONE, "no longer listed by the c")]
    (gone,) = store.find(name)
    assert (gone.shutdown_code, gone.shutdown_text) == (200, "Success")


@pytest.mark.parametrize(("error", "kind"), [(Unauthorized("AuthFailure: check the access_key"), "auth"),
                                             (LaunchRejected("image not found"), "rejected")])
def test_refused_create_fails_the_request_and_backs_off(store: Store, error: Exception, kind: str) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    cloud.inject("create", error, times=1)  # type: ignore[arg-type]
    ctx = context(load_text(config_text(limit=1)), store, cloud, clock)
    report = run_cycle(ctx)
    assert not report.ok and f"create refused ({kind})" in report.errors[0].message
    assert (report.errors[0].kind, report.errors[0].machinetype) == (f"create_refused_{kind}", "mt")
    assert states(store) == {"create_failed": 1}
    assert store.load("sp").backoffs["mt"].reason.startswith(f"create refused ({kind})")
    clock.advance(60)
    again = run_cycle(ctx)  # still within backoff_seconds: nothing is created
    assert again.counts["creates"] == 0 and any(d.reason.startswith("backoff") for d in again.decisions)


def test_unconfirmed_create_is_left_to_sync_which_adopts_the_machine(store: Store) -> None:
    clock = FakeClock()

    class Timeout(FakeConnector):
        def create_machine(self, spec):  # type: ignore[no-untyped-def]
            super().create_machine(spec)  # the cloud made it, but the answer was lost
            raise CloudUnavailable("read timeout")

    cloud = Timeout(clock=clock)
    ctx = context(load_text(config_text(limit=1)), store, cloud, clock)
    report = run_cycle(ctx)
    assert "create not confirmed" in report.errors[0].message and report.errors[0].kind == "create_not_confirmed"
    assert states(store) == {"requested": 1}
    clock.advance(60)
    run_cycle(ctx)
    assert states(store) == {"running": 1}
    assert len(cloud.ours()) == 1  # exactly one machine, never two


def test_requested_machine_that_never_appears_times_out(store: Store) -> None:
    clock = FakeClock()

    class Lost(FakeConnector):
        def create_machine(self, spec):  # type: ignore[no-untyped-def]
            raise CloudUnavailable("connection reset")

    ctx = context(load_text(config_text(limit=1, settings={"request_timeout_seconds": 120})), store, Lost(clock=clock),
                  clock)
    run_cycle(ctx)
    clock.advance(121)
    run_cycle(ctx)
    assert states(store).get("create_failed") == 1


def test_cloud_unavailable_on_list_skips_the_space_and_changes_nothing(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    cloud.inject("list", CloudUnavailable("HTTP 503 from compute"))
    report = run_cycle(context(load_text(config_text()), store, cloud, clock))
    assert not report.ok and [(e.kind, e.message) for e in report.errors] == [
        ("space_skipped", "skipped: HTTP 503 from compute")]
    assert cloud.ours() == [] and store.load("sp").version == 0
    assert store.last_reports()["sp"]["ok"] is False


def test_failed_delete_is_retried_no_more_often_than_the_setting(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    config = load_text(config_text(limit=1, settings={"delete_retry_seconds": 300}))
    ctx = context(config, store, cloud, clock)
    run_cycle(ctx)
    (name,) = [m.name for m in cloud.ours()]
    cloud.set_status(name, CloudStatus.STOPPED)
    cloud.inject("delete", CloudUnavailable("timeout"), times=3)  # lasting: each try within the call fails
    clock.advance(60)
    run_cycle(ctx)
    assert states(store) == {"delete_failed": 1}
    clock.advance(60)
    run_cycle(ctx)
    assert [c for c in cloud.calls if c[0] == "delete"] == [("delete", cloud.machines[name].id)] * 3
    clock.advance(300)
    run_cycle(ctx)
    assert len([c for c in cloud.calls if c[0] == "delete"]) == 4 and cloud.ours() == []


def test_unknown_demand_creates_nothing_but_deletions_go_on(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    demand = tmp_path / "demand.json"
    demand.write_text('{"sp": {"mt": {"idle_jobs": 3}}}')
    config = load_text(config_text(limit=10, machinetypes={"mt": {"demand": "q"}},
                                   extra=f"[demand q]\ntype = file\npath = {demand}\n"))
    ctx = context(config, store, cloud, clock)
    assert run_cycle(ctx).counts["creates"] == 1  # ceil(3/1) capped by ceil(0.1 x 10)
    name = cloud.ours()[0].name
    cloud.set_status(name, CloudStatus.STOPPED)
    demand.write_text("{broken")
    clock.advance(60)
    report = run_cycle(ctx)
    assert report.counts["creates"] == 0 and report.counts["deletes"] == 1
    assert any(d.reason.startswith("demand unknown") for d in report.decisions)


def test_unrenderable_user_data_stops_that_machinetype_only(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)

    def render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
        if mt.name == "bad":
            raise RenderError("template missing")
        return b"ok"

    config = load_text(config_text(limit=10, settings={"max_create_fraction": 1},
                                   machinetypes={"bad": {}, "good": {}}))
    report = run_cycle(context(config, store, cloud, clock, render=render))
    assert {m.owner.machinetype for m in cloud.ours() if m.owner} == {"good"}
    assert any("user-data not rendered" in e.message and e.kind == "user_data" for e in report.errors)
    assert len(cloud.ours()) == 10  # the broken one's share went to the other, not to waste
    held = [d for d in report.decisions if d.machinetype == "bad"]
    assert held and all(d.action.value == "hold" and d.rule == "user_data" for d in held), held
    assert "template missing" in held[0].reason
    assert not any(d.action.value == "create" and d.machinetype == "bad" for d in report.decisions)


def test_one_failing_space_does_not_stop_the_others(store: Store) -> None:
    clock = FakeClock()
    text = config_text(limit=2) + "[space other]\napi = fake\nprocessors_limit = 2\n" \
        "[machinetype other mt]\nuser_data = ud\ntarget_share = 1\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
    config = load_text(text)
    broken, fine = FakeConnector(clock=clock), FakeConnector(clock=clock)
    broken.inject("list", CloudUnavailable("keystone unreachable"))
    reports = run_all([context(config, store, broken, clock, "sp"), context(config, store, fine, clock, "other")], 4)
    assert [r.ok for r in reports] == [False, True]
    assert len(fine.ours()) == 1


def test_spaces_run_concurrently(store: Store) -> None:
    clock = FakeClock()
    text = config_text(limit=1)
    for i in range(5):
        text += f"[space s{i}]\napi = fake\nprocessors_limit = 1\n[machinetype s{i} mt]\nuser_data = ud\n" \
                "target_share = 1\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
    config = load_text(text)
    contexts = [context(config, store, FakeConnector(clock=clock, latency_seconds=0.2), clock, f"s{i}")
                for i in range(5)]
    started = time.perf_counter()
    reports = run_all(contexts, workers=8)
    elapsed = time.perf_counter() - started
    assert all(r.ok for r in reports)
    # each space: list, capacity, create = 3 calls of 0.2 s; serially five spaces would take 3 s
    assert elapsed < 2.0, elapsed


def test_stale_state_skips_the_cycle_without_cloud_calls(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock)
    ctx = context(load_text(config_text(limit=1)), store, cloud, clock)

    class Racing(FakeConnector):
        def capacity(self) -> int | None:
            store.write("sp", store.load("sp").version)  # another manager commits meanwhile
            return None

    ctx.connector = Racing(clock=clock)
    report = run_cycle(ctx)
    assert not report.ok and "another writer" in report.errors[0].message
    assert [c for c in ctx.connector.calls if c[0] == "create"] == []  # type: ignore[attr-defined]


def test_each_machine_gets_a_token_in_its_user_data_and_only_the_hash_is_stored(store: Store) -> None:
    import hashlib
    import json

    clock = FakeClock()
    seen: dict[str, str] = {}

    def render(space: Any, mt: Any, name: str, order: Any, request: str, token: str) -> bytes:
        seen[name] = token
        return f"#!/bin/sh\nTOKEN={token}\n".encode()

    cloud = FakeConnector(clock=clock)
    config = load_text(config_text(limit=2, settings={"max_create_fraction": 1},
                                   machinetypes={"mt": {"hs06_per_processor": 10, "max_wallclock_seconds": 7200}}))
    run_cycle(context(config, store, cloud, clock, render=render))
    records = store.load("sp").records
    assert len(records) == 2 and len({seen[r.name] for r in records}) == 2  # (a trial render checks first)
    for record in records:
        token = seen[record.name]
        assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token.encode() in cloud.machines[record.name].user_data
        features = json.loads(record.features or "{}")
        start = int(clock().timestamp())
        assert features["machinefeatures"] == {"jobslots": "1", "total_cpu": "1", "phys_cores": "1",
                                               "log_cores": "1", "hs06": "10", "shutdowntime": str(start + 7200)}
        assert features["jobfeatures"]["jobstart_secs"] == str(start)
        assert features["jobfeatures"]["max_rss_bytes"] == str(2048 * 1024 * 1024)
    with store.engine.connect() as c:
        from sqlalchemy import text

        dump = " ".join(str(row) for row in c.execute(text("select * from machines")))
    assert not any(token in dump for token in seen.values())  # the token itself is never stored


def test_connector_notices_reach_the_report_and_status(store: Store) -> None:
    import io

    from rich.console import Console

    from vcycle.cli.show import show
    from vcycle.store.status import collect

    clock = FakeClock()

    class Expiring(FakeConnector):
        def notices(self, now):  # type: ignore[no-untyped-def]
            return [f"the OpenStack password of this space expires at {now:%Y-%m-%d}"]

    class Broken(FakeConnector):
        def notices(self, now):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in an advisory call")

    config = load_text(config_text())
    expiring = Expiring(clock=clock)
    report = run_cycle(context(config, store, expiring, clock))
    assert report.ok and report.warnings == (f"the OpenStack password of this space expires at {clock():%Y-%m-%d}",)
    out = io.StringIO()
    show(collect(config, store, clock()), Console(file=out, width=200))
    assert f"warning: the OpenStack password of this space expires at {clock():%Y-%m-%d}" in out.getvalue()
    broken = Broken(clock=clock)
    broken.machines = expiring.machines  # the same cloud, so that nothing vanishes
    assert run_cycle(context(config, store, broken, clock)).warnings == ()  # never fails a cycle


class Hanging(FakeConnector):
    """A fake cloud whose chosen calls hang until released (an endpoint that stopped answering)."""

    def __init__(self, *args: Any, hang: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang = set(hang)
        self.release = __import__("threading").Event()
        self.hung = 0  # calls begun and not yet answered

    def _hold(self, what: str) -> bool:
        if what not in self.hang:
            return False
        self.hung += 1
        self.release.wait(60)
        self.hung -= 1
        return True

    def list_machines(self):  # type: ignore[no-untyped-def]
        self._hold("list")
        return super().list_machines()

    def capacity(self):  # type: ignore[no-untyped-def]
        self._hold("capacity")
        return super().capacity()

    def create_machine(self, spec):  # type: ignore[no-untyped-def]
        self._hold("create")
        return super().create_machine(spec)

    def delete_machine(self, machine_id):  # type: ignore[no-untyped-def]
        if self._hold("delete"):
            return None  # the delete was lost on the way
        return super().delete_machine(machine_id)


def test_creates_that_do_not_answer_are_left_to_the_next_sync_after_api_timeout(
        store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle waits for its creates api_timeout_seconds per round of workers, not for ever, and says so while
    it waits; the machines the cloud makes after all are adopted by the next listing, none is lost."""
    from vcycle.loop import calls

    monkeypatch.setattr(calls, "LONG_SECONDS", 0.2)
    clock = FakeClock()
    cloud = Hanging(clock=clock, hang=("create",))
    config = load_text(config_text(limit=2, settings={"max_create_fraction": 1}, space={"api_timeout_seconds": 1}))
    try:
        report = run_cycle(context(config, store, cloud, clock))
        # both creates still running: the cycle did not wait for them (the second waited for the first, its
        # offering's probe, half of api_timeout_seconds, then called anyway)
        assert cloud.hung == 2
        assert [e.kind for e in report.errors] == ["create_not_confirmed"] * 2
        assert "no answer within 1s (api_timeout_seconds)" in report.errors[0].message
        assert "space=sp api=fake 2 of 2 create/delete calls have not answered for 0.2s" in caplog.text
        assert states(store) == {"requested": 2}
    finally:
        cloud.release.set()
    for _ in range(100):
        if cloud.hung == 0 and len(cloud.machines) == 2:
            break
        time.sleep(0.05)
    cloud.hang.clear()
    clock.advance(1)
    run_cycle(context(config, store, cloud, clock))
    assert states(store) == {"running": 2} and len(cloud.machines) == 2  # adopted, nothing made twice


def test_a_delete_that_does_not_answer_is_sent_again_while_the_machine_is_listed(store: Store) -> None:
    clock = FakeClock()
    cloud = Hanging(clock=clock)
    config = load_text(config_text(limit=1, settings={"max_create_fraction": 1}, space={"api_timeout_seconds": 1},
                                   machinetypes={"mt": {"max_wallclock_seconds": 60}}))
    run_cycle(context(config, store, cloud, clock))
    (first,) = store.load("sp").records
    clock.advance(61)  # past its wallclock: deleted
    cloud.hang = {"delete"}
    try:
        report = run_cycle(context(config, store, cloud, clock))
        assert cloud.hung == 1 and "delete not confirmed: no answer within 1s" in report.errors[0].message
        assert states(store) == {"deleting": 1}
    finally:
        cloud.release.set()
    while cloud.hung:
        time.sleep(0.01)
    cloud.hang.clear()
    assert first.name in cloud.machines  # the delete was lost
    clock.advance(1)
    calls = len(cloud.calls)
    run_cycle(context(config, store, cloud, clock))
    assert ("delete", first.cloud_id) in cloud.calls[calls:]  # sent again at once, not after 900 s
    assert first.name not in cloud.machines


def test_a_listing_that_does_not_answer_skips_its_space_only(store: Store, caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from vcycle.loop import calls

    monkeypatch.setattr(calls, "LONG_SECONDS", 0.2)
    clock = FakeClock()
    text = config_text(limit=2, settings={"max_create_fraction": 1}, space={"api_timeout_seconds": 1})
    text += text[text.index("[space sp]"):].replace(" sp", " other")
    config = load_text(text)
    silent = Hanging(clock=clock, hang=("list",))
    try:
        reports = run_all([context(config, store, silent, clock), context(config, store, FakeConnector(clock=clock),
                                                                          clock, space="other")], 4)
        assert silent.hung == 1
    finally:
        silent.release.set()
    assert not reports[0].ok and "fake list_machines did not answer within 1s" in reports[0].errors[0].message
    assert reports[1].ok and states(store, "other") == {"starting": 2}
    assert "space=sp api=fake list_machines has not answered for 0.2s" in caplog.text  # said while waiting


def test_a_cloud_is_listed_and_asked_its_capacity_in_one_call_and_the_part_that_hangs_is_named(
        store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing, the capacity and the flavors are one hand-off to the space's call threads (one thread of
    them runs all three, in that order); when the capacity does not answer, the error and the log name it, not
    the listing that did."""
    from vcycle.loop import calls

    monkeypatch.setattr(calls, "LONG_SECONDS", 0.2)
    clock = FakeClock()
    config = load_text(config_text(limit=2, space={"api_timeout_seconds": 1}))
    threads: list[tuple[str, str]] = []

    class Watched(Hanging):
        def list_machines(self):  # type: ignore[no-untyped-def]
            threads.append(("list", threading.current_thread().name))
            return super().list_machines()

        def capacity(self):  # type: ignore[no-untyped-def]
            threads.append(("capacity", threading.current_thread().name))
            return super().capacity()

    class Counted(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            Counted.submitted += 1
            return super().submit(*args, **kwargs)

    ctx = context(load_text(config_text(limit=0)), store, Watched(clock=clock), clock)
    ctx.pool = Counted(max_workers=8)
    for _ in range(3):  # a space with no room: nothing to create or delete
        before = Counted.submitted
        assert run_cycle(ctx).ok
        assert Counted.submitted - before == 1  # one hand-off for the listing, capacity and flavors
        clock.advance(60)
    assert [what for what, _ in threads[-2:]] == ["list", "capacity"] and len({n for _, n in threads[-2:]}) == 1
    assert threads[-1][1] != threading.current_thread().name
    ctx.pool.shutdown()
    silent = Hanging(clock=clock, hang=("capacity",))
    try:
        report = run_cycle(context(config, store, silent, clock))
        assert silent.hung == 1
    finally:
        silent.release.set()
    assert not report.ok and "fake capacity and flavors did not answer within 1s" in report.errors[0].message
    assert "space=sp api=fake capacity and flavors has not answered for 0.2s" in caplog.text
    assert "list_machines has not answered" not in caplog.text


def test_a_drained_machine_without_a_batch_system_is_asked_through_its_connector(store: Store) -> None:
    """An interruption notice drains the machine; a connector that can (local: SIGTERM to the entrypoint) is
    asked to drain it by its cloud id, and a failure to is reported, the machine still DRAINING."""
    from vcycle.errors import CloudUnavailable as Unreachable

    class Draining(FakeConnector):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.drained: list[str] = []
            self.refuse = False

        def drain_machine(self, machine_id: str) -> None:
            if self.refuse:
                raise Unreachable("cannot signal it")
            self.drained.append(machine_id)

    clock = FakeClock()
    cloud = Draining(clock=clock)
    config = load_text(config_text(limit=2, settings={"max_create_fraction": 1}))
    ctx = context(config, store, cloud, clock)
    run_cycle(ctx)
    clock.advance(60)
    run_cycle(ctx)
    first, second = sorted(store.load("sp").records, key=lambda r: r.name)
    notice = "EC2 spot interruption notice: terminate"
    store.put_heartbeats([("sp", Heartbeat(first.name, interruption=notice, interruption_at=clock()))])
    clock.advance(10)
    run_cycle(ctx)
    assert cloud.drained == [first.cloud_id]
    cloud.refuse = True
    store.put_heartbeats([("sp", Heartbeat(second.name, interruption=notice, interruption_at=clock()))])
    clock.advance(10)
    report = run_cycle(ctx)
    assert [e.kind for e in report.errors] == ["drain_failed"] and "cannot signal it" in report.errors[0].message
    assert states(store) == {"draining": 2}


@pytest.mark.parametrize("boot_seconds", [100, 119])
def test_machines_booting_slowly_within_their_launch_deadline_are_never_deleted(store: Store,
                                                                                boot_seconds: int) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock, boot_seconds=boot_seconds)
    config = load_text(config_text(limit=2, settings={"max_create_fraction": 1},
                                   machinetypes={"mt": {"launch_timeout_seconds": 120}}))
    ctx = context(config, store, cloud, clock)
    for _ in range(8):  # a cycle every 20 s, through boot and past the deadline
        run_cycle(ctx)
        clock.advance(20)
    assert states(store) == {"running": 2} and "mt" not in store.load("sp").backoffs


def test_a_machine_past_its_launch_deadline_is_deleted_as_an_abort(store: Store) -> None:
    clock = FakeClock()
    cloud = FakeConnector(clock=clock, boot_seconds=10_000)
    config = load_text(config_text(limit=1, machinetypes={"mt": {"launch_timeout_seconds": 120}}))
    ctx = context(config, store, cloud, clock)
    run_cycle(ctx)
    clock.advance(121)
    report = run_cycle(ctx)
    assert report.counts["deletes"] == 1
    (record,) = store.load("sp").records
    assert (record.shutdown_code, record.shutdown_text) == (700, "Failed to start")
    assert "still starting 121s after creation (launch_timeout_seconds 120)" in record.reason
    assert store.load("sp").backoffs["mt"].reason.endswith("deleted with '700 Failed to start'")
