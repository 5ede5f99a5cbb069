"""The store contract, on SQLite and on the real PostgreSQL server of this machine."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from vcycle.core.model import (
    Action,
    Backoff,
    CycleReport,
    Decision,
    Heartbeat,
    MachineRecord,
    ReportError,
    StatusChange,
    new_record,
    transition,
)
from vcycle.core.states import BIRTH, TRANSITIONS, MachineState
from vcycle.errors import StaleState, StoreError
from vcycle.store import Store

S = MachineState
T0 = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def full_record(name: str = "m1", state: MachineState = S.RUNNING,
                changes: list[tuple[str, StatusChange]] | None = None) -> MachineRecord:
    """A record with every field set, moved to ``state``; each change made is appended to ``changes``."""
    record = new_record(name=name, space="sp", machinetype="mt", state=S.REQUESTED, processors=4, now=T0,
                        request_id="req-" + name, reason="intent: lowest weighted count", manager="mgr",
                        cloud_id="id-" + name, zone="az1", flavor="m1.large", hs06=42.5,
                        shutdown_at=T0 + timedelta(days=1))
    made = [record]
    if state is not S.REQUESTED:
        made.append(transition(made[-1], S.STARTING, T0 + timedelta(seconds=5), "cloud reports starting"))
    if state is S.RUNNING:
        made.append(transition(made[-1], S.RUNNING, T0 + timedelta(seconds=65), "cloud reports running",
                               started_at=T0 + timedelta(seconds=65), heartbeat_at=T0 + timedelta(seconds=99),
                               shutdown_code=300, shutdown_text="Nothing to do", delete_attempts=2,
                               last_delete_at=T0 + timedelta(seconds=70), delete_requested="operator",
                               stopped_at=T0 + timedelta(seconds=80), interruption="EC2 spot interruption notice",
                               interrupted_at=T0 + timedelta(seconds=75)))
    if changes is not None:
        changes.extend((name, m.last) for m in made if m.last is not None)
    return made[-1]


def test_unknown_space_starts_empty_at_version_0(store: Store) -> None:
    state = store.load("nowhere")
    assert (state.version, state.records, dict(state.backoffs), state.draining) == (0, (), {}, frozenset())


def test_records_round_trip_with_every_field(store: Store) -> None:
    changes: list[tuple[str, StatusChange]] = []
    record = full_record(changes=changes)
    store.write("sp", 0, [record], changes)
    (loaded,) = store.load("sp").records
    for field in MachineRecord.__slots__:
        assert getattr(loaded, field) == getattr(record, field), field
    assert loaded.created_at.tzinfo is not None
    # a loaded record's last change is the one it had in memory, cause included, and the history's last
    assert loaded.last is not None and loaded.last.cause == TRANSITIONS[(S.STARTING, S.RUNNING)]
    assert store.history("sp", "m1")[-1] == loaded.last


def test_write_bumps_the_version_and_a_stale_write_changes_nothing(store: Store) -> None:
    assert store.write("sp", store.load("sp").version, [full_record("a")]) == 1
    with pytest.raises(StaleState, match="another writer committed after version 0"):
        store.write("sp", 0, [full_record("b")])
    assert [r.name for r in store.load("sp").records] == ["a"]
    assert store.load("sp").version == 1


def test_of_two_concurrent_writers_exactly_one_wins(store: Store) -> None:
    version = store.load("sp").version
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def writer(name: str) -> None:
        barrier.wait()
        try:
            store.write("sp", version, [full_record(name)])
            outcomes.append("won")
        except StaleState:
            outcomes.append("stale")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale", "won"]
    assert len(store.load("sp").records) == 1


def test_history_keeps_every_change_in_order_with_its_cause(store: Store) -> None:
    changes: list[tuple[str, StatusChange]] = []
    record = full_record(changes=changes)
    store.write("sp", 0, [record], changes)
    stopped = transition(record, S.STOPPED, T0 + timedelta(hours=1), "cloud reports stopped")
    gone = transition(stopped, S.GONE, T0 + timedelta(hours=2), "no longer listed by the cloud")
    store.write("sp", 1, [gone], [("m1", stopped.last), ("m1", gone.last)])  # type: ignore[list-item]
    assert [(h.state, h.reason) for h in store.history("sp", "m1")] == [
        (S.REQUESTED, "intent: lowest weighted count"), (S.STARTING, "cloud reports starting"),
        (S.RUNNING, "cloud reports running"), (S.STOPPED, "cloud reports stopped"),
        (S.GONE, "no longer listed by the cloud")]
    assert [h.cause for h in store.history("sp", "m1")] == [
        BIRTH[S.REQUESTED], TRANSITIONS[(S.REQUESTED, S.STARTING)], TRANSITIONS[(S.STARTING, S.RUNNING)],
        TRANSITIONS[(S.RUNNING, S.STOPPED)], TRANSITIONS[(S.STOPPED, S.GONE)]]
    assert store.load("sp").records == ()  # GONE is not loaded for cycles
    assert [r.state for r in store.find("m1")] == [S.GONE]  # but can be found


def test_purge_forgets_old_gone_machines_only(store: Store) -> None:
    old = transition(full_record("old"), S.GONE, T0, "vanished", accounted_at=T0)
    young = transition(full_record("young"), S.GONE, T0 + timedelta(hours=80), "vanished", accounted_at=T0)
    waiting = transition(full_record("waiting"), S.GONE, T0, "vanished")  # its accounting not yet done
    alive = full_record("alive")
    store.write("sp", 0, [old, young, waiting, alive], [("old", old.last), ("young", young.last)])
    store.put_heartbeats([("sp", Heartbeat("old", T0))])
    assert store.purge("sp", T0 + timedelta(hours=72)) == 1
    assert store.find("old") == [] and store.history("sp", "old") == []
    assert "old" not in store.heartbeats("sp")
    assert [r.name for r in store.find("young")] == ["young"]
    assert [(r.name, r.accounted_at) for r in store.find("waiting")] == [("waiting", None)]


def test_backoffs_round_trip_and_later_ones_replace_earlier(store: Store) -> None:
    store.write("sp", 0, backoffs={"mt": Backoff("mt", T0, "m1 stopped with '300 No work'")})
    store.write("sp", 1, backoffs={"mt": Backoff("mt", T0 + timedelta(minutes=5), "m2 fizzled")})
    assert store.load("sp").backoffs == {"mt": Backoff("mt", T0 + timedelta(minutes=5), "m2 fizzled")}


def test_heartbeats_are_written_in_batches_later_values_winning(store: Store) -> None:
    store.put_heartbeats([("sp", Heartbeat("a", T0)), ("sp", Heartbeat("b", T0)),
                          ("sp", Heartbeat("a", T0 + timedelta(seconds=60), "200 Success", T0))])
    beats = store.heartbeats("sp")
    assert beats["a"] == Heartbeat("a", T0 + timedelta(seconds=60), "200 Success", T0)
    store.put_heartbeats([("sp", Heartbeat("a", interruption="Azure Scheduled Event Preempt", interruption_at=T0))])
    again = store.heartbeats("sp")["a"]  # the notice added, nothing the machine said before erased
    assert (again.interruption, again.interruption_at, again.shutdown_message) == (
        "Azure Scheduled Event Preempt", T0, "200 Success")
    assert beats["b"].at == T0
    assert store.heartbeats("other") == {}


def test_last_report_per_space(store: Store) -> None:
    for minute in range(3):
        store.add_report(CycleReport("sp", T0 + timedelta(minutes=minute), T0 + timedelta(minutes=minute, seconds=2),
                                     ok=minute != 2, counts={"creates": minute},
                                     decisions=(Decision(Action.HOLD, "sp", "mt", f"reason {minute}",
                                                         rule="backoff"),),
                                     errors=(ReportError("space_skipped", "sp", "cloud down"),) if minute == 2 else ()))
    store.add_report(CycleReport("other", T0, T0, ok=True))
    reports = store.last_reports()
    assert reports["sp"]["counts"] == {"creates": 2} and reports["sp"]["ok"] is False
    assert (reports["sp"]["decisions"][0]["reason"], reports["sp"]["decisions"][0]["rule"]) == ("reason 2", "backoff")
    assert reports["sp"]["errors"] == [{"kind": "space_skipped", "space": "sp", "machinetype": "", "machine": "",
                                        "message": "cloud down"}]
    assert set(reports) == {"sp", "other"}


def test_draining_is_part_of_the_versioned_space(store: Store) -> None:
    store.write("sp", 0, draining=frozenset({"mt"}))
    assert store.load("sp").draining == {"mt"}
    store.write("sp", 1, draining=frozenset())
    assert store.load("sp").draining == frozenset()
    assert set(store.spaces()) == {"sp"}


def test_reopening_a_migrated_store_is_harmless(store_url: str) -> None:
    Store.open(store_url).close()
    again = Store.open(store_url)
    assert again.load("sp").version == 0
    again.close()


def test_migrations_create_exactly_the_schema(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from vcycle.store.schema import metadata

    Store.open(store_url).close()
    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    engine.dispose()
    assert diff == []


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StoreError, match="not a database URL"):
        Store.open("not a url")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError, match="cannot create the state directory"):
        Store.open(f"sqlite:///{blocked}/sub/state.db")
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store.open("postgresql://nobody:secret@127.0.0.1:1/none")


def test_another_writer_invalidates_what_this_store_remembers(store: Store, store_url: str) -> None:
    store.write("sp", store.load("sp").version, [full_record("mine")])
    assert [r.name for r in store.load("sp").records] == ["mine"]  # now served from memory
    other = Store.open(store_url)  # a second manager, or the CLI
    other.write("sp", other.load("sp").version, [full_record("theirs")])
    other.close()
    assert sorted(r.name for r in store.load("sp").records) == ["mine", "theirs"]


def test_heartbeats_are_read_incrementally_and_completely(store: Store, store_url: str) -> None:
    store.put_heartbeats([("sp", Heartbeat("a", T0))])
    assert set(store.heartbeats("sp")) == {"a"}
    other = Store.open(store_url)  # the HTTPS endpoint writes from another process
    other.put_heartbeats([("sp", Heartbeat("b", T0)), ("sp", Heartbeat("a", T0 + timedelta(seconds=60)))])
    other.close()
    beats = store.heartbeats("sp")
    assert set(beats) == {"a", "b"} and beats["a"].at == T0 + timedelta(seconds=60)


def test_a_look_reads_the_records_and_the_heartbeats_in_one_transaction(store: Store, store_url: str) -> None:
    store.write("sp", store.load("sp").version, [full_record("a")])
    store.put_heartbeats([("sp", Heartbeat("a", T0))])
    state, beats, _ = store.look("sp")
    assert [r.name for r in state.records] == ["a"] and set(beats) == {"a"}
    other = Store.open(store_url)  # another writer between two looks: both its record and its heartbeat are seen
    other.write("sp", other.load("sp").version, [full_record("b")])
    other.put_heartbeats([("sp", Heartbeat("b", T0))])
    other.close()
    again, more, _ = store.look("sp")
    assert again.version == state.version + 1 and sorted(r.name for r in again.records) == ["a", "b"]
    assert set(more) == {"a", "b"} and more["a"] is beats["a"]
    steady, same, _ = store.look("sp")  # nothing changed: the very objects handed out before
    assert steady is again and same is more
    begun: list[int] = []
    original = store._begin
    store._begin = lambda write=False: begun.append(1) or original(write)  # type: ignore[method-assign]
    _, _, found = store.look("sp", lambda c: c.execute(text("SELECT count(*) FROM machines")).scalar())
    assert found == 2 and begun == [1]  # the other read too, in the same transaction


def test_of_two_endpoints_the_heartbeat_said_later_wins_whichever_is_written_last(
        store: Store, store_url: str) -> None:
    later, earlier = T0 + timedelta(seconds=60), T0 + timedelta(seconds=30)
    store.put_heartbeats([("sp", Heartbeat("a", later, "200 Success", later, address="10.0.0.2",
                                           interruption="preempt", interruption_at=later))])
    other = Store.open(store_url)  # a second host's endpoint flushes what it got before, after
    other.put_heartbeats([("sp", Heartbeat("a", earlier, "300 No work", earlier, address="10.0.0.1",
                                           interruption="stale notice", interruption_at=earlier))])
    other.put_heartbeats([("sp", Heartbeat("b", earlier, address="10.0.0.3"))])
    other.close()
    beat = store.heartbeats("sp")["a"]
    assert (beat.at, beat.address, beat.shutdown_message, beat.interruption) == (
        later, "10.0.0.2", "200 Success", "preempt")
    store.put_heartbeats([("sp", Heartbeat("a", later + timedelta(seconds=1), address="10.0.0.4"))])
    beat = store.heartbeats("sp")["a"]  # a newer beat wins and keeps the message it does not repeat
    assert (beat.at, beat.address, beat.shutdown_message) == (later + timedelta(seconds=1), "10.0.0.4", "200 Success")
    assert store.heartbeats("sp")["b"].address == "10.0.0.3"


def test_records_lists_every_state_of_a_space(store: Store) -> None:
    old = transition(full_record("old"), S.GONE, T0 + timedelta(hours=1), "vanished")
    store.write("sp", 0, [full_record("new"), old])
    assert {(r.name, r.state) for r in store.records("sp")} == {("new", S.RUNNING), ("old", S.GONE)}
    assert store.records("elsewhere") == []


def test_pilot_requests_wait_are_claimed_with_their_machines_and_are_counted(store: Store) -> None:
    from vcycle.store.pilots import PilotBook

    book = PilotBook(store)
    book.add("sp", "mt", "ce.example.org", "default", [("p1", "s" * 32), ("p2", "t" * 32), ("p3", "u" * 32)],
             "#!/bin/bash\nwrapper with a proxy\n", T0)
    book.add("sp", "other", "ce.example.org", "default", [("q1", "v" * 32)], "w", T0 + timedelta(seconds=1))
    pending = book.pending("sp")
    assert [(p.name, p.stamp, p.requested_at) for p in pending["mt"]] == [
        ("p1", "s" * 32, T0), ("p2", "t" * 32, T0), ("p3", "u" * 32, T0)]
    assert pending["mt"][0].wrapper == "#!/bin/bash\nwrapper with a proxy\n"
    assert book.pending_counts("sp") == {"mt": 3, "other": 1}
    # p1 gets its machine: claimed in the same write as the machine's record, its wrapper dropped
    p1 = new_record(name="p1", space="sp", machinetype="mt", state=S.REQUESTED, processors=1, now=T0,
                    request_id="r1", reason="intent", manager="mgr")
    with pytest.raises(StaleState):  # a write that fails takes its claim with it: p1 still waits
        store.write("sp", 7, [p1], steps=[book.claim("sp", ["p1"], T0)])
    assert [p.name for p in book.pending("sp")["mt"]] == ["p1", "p2", "p3"]
    store.write("sp", 0, [p1], steps=[book.claim("sp", ["p1"], T0)])
    assert [p.name for p in book.pending("sp")["mt"]] == ["p2", "p3"]
    assert book.counts("sp") == {"mt": (3, 0), "other": (1, 0)}  # p1 still booting: waiting for DIRAC
    assert book.counts("sp", "mt") == {"mt": (3, 0)}
    with store.engine.connect() as c:
        assert c.exec_driver_sql("SELECT wrapper FROM pilot_requests WHERE name = 'p1'").scalar() is None
    state = store.load("sp")
    running = transition(state.records[0], S.RUNNING, T0 + timedelta(minutes=2), "cloud reports running")
    store.write("sp", state.version, [running])
    assert book.counts("sp", "mt") == {"mt": (2, 1)}
    assert book.cancel("sp", ["p2", "p1", "nope"], "DIRAC: pilot killed", T0) == 1  # only waiting ones
    assert book.expire("sp", 3599, T0 + timedelta(hours=1)) == 1  # waited since before T0 + 1 s: p3; q1 is younger
    found = book.states("sp", ["p1", "p2", "p3", "q1", "nope"])
    assert {n: (s.request, s.machine) for n, s in found.items()} == {
        "p1": ("claimed", S.RUNNING), "p2": ("cancelled", None), "p3": ("expired", None), "q1": ("pending", None)}
    # forgotten with their machines, or once ended long enough ago
    assert store.purge("sp", T0 + timedelta(hours=2)) == 0
    assert set(book.states("sp", ["p1", "p2", "p3", "q1"])) == {"p1", "q1"}


def test_interruptions_are_counted_as_the_pure_tally_counts_them(store: Store) -> None:
    """Store.interruptions in SQL against core/interruptions.tally on the same records, GONE ones included."""
    from vcycle.core import interruptions

    now = T0 + timedelta(hours=3)
    hour = now - interruptions.STORM_WINDOW
    shapes = [  # (started, interrupted, stopped), in minutes before now; None: not so
        (170, None, None), (170, 30, 10), (100, 90, None), (170, 120, 100), (50, None, 40), (5, 5, None),
        (None, None, None), (None, 2, None), (170, None, 150),
    ]
    records = []
    for i, (started, hit, stopped) in enumerate(shapes):
        def at(minutes: int | None) -> datetime | None:
            return None if minutes is None else now - timedelta(minutes=minutes)

        records.append(dataclasses.replace(full_record(f"m{i}", S.REQUESTED), started_at=at(started),
                                           interrupted_at=at(hit), interruption="x" if hit is not None else None,
                                           stopped_at=at(stopped),
                                           state=S.GONE if stopped is not None else S.RUNNING))
    store.write("sp", 0, records)
    assert store.interruptions("sp", hour) == {"mt": interruptions.tally(records, "mt", now)} == {"mt": (3, 6)}
