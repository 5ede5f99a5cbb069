"""Leases in the store and the fence they put on writes and cloud calls, on SQLite and a real PostgreSQL.

The claims and renewals run on a clock the test moves (both databases); the last test runs on PostgreSQL's own
clock, as managers do.
"""

from __future__ import annotations

import time

import pytest
from vctest import load_text, rec

from vcycle.core.sections import Settings
from vcycle.core.states import MachineState
from vcycle.errors import ConfigError, Fenced, HandedOn, LeaseLost, StaleState
from vcycle.loop.leases import Holder
from vcycle.store import Store
from vcycle.store.leases import LeaseTable, changes, status

SETTINGS = Settings(manager_name="mgr", lease_seconds=15.0, lease_renew_seconds=5.0)


class Clock:
    def __init__(self, at: float = 1000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_a_claim_holds_until_expiry_and_raises_the_epoch_each_time(store: Store) -> None:
    clock = Clock()
    a, b = LeaseTable(store, "a", 15.0, clock), LeaseTable(store, "b", 15.0, clock)
    first = a.claim({"sp": "never held before"}).get("sp")
    assert first is not None and (first.epoch, first.expires) == (1, 1015.0)
    assert b.claim({"sp": "try"}).get("sp") is None  # live: never taken
    clock.at = 1010.0
    assert set(a.renew()[1]) == {"sp"}
    clock.at = 1020.0
    assert b.claim({"sp": "try"}).get("sp") is None  # renewed at 1010: lives until 1025
    clock.at = 1025.0
    taken = b.claim({"sp": "taken over"}).get("sp")
    assert taken is not None and taken.epoch == 2
    assert a.renew()[1] == {}  # a's renewal no longer reaches it
    b.release({"sp": "stopping: handed on"})
    again = a.claim({"sp": "released by b"}).get("sp")
    assert again is not None and again.epoch == 3
    assert [(c["holder"], c["previous"], c["taken_over"]) for c in changes(store, 0)] == [
        ("a", "", False), ("b", "a", True), ("a", "b", False)]


def test_a_round_claims_every_free_space_in_one_go_and_leaves_out_one_held(store: Store) -> None:
    clock = Clock()
    a, b = LeaseTable(store, "a", 15.0, clock), LeaseTable(store, "b", 15.0, clock)
    assert set(a.claim({"s1": "never held before", "s2": "never held before"})) == {"s1", "s2"}
    got = b.claim({"s1": "try", "s2": "try", "s3": "never held before"})  # s1, s2 live under a: left out
    assert set(got) == {"s3"} and got["s3"].epoch == 1 and got["s3"].reason == "never held before"
    b.beat()
    a.beat()
    a.release({"s1": "stopping: handed on", "s2": "handed to b: 2 managers share the spaces"}, leave=True)
    _, leases, live = b.look()
    assert live == ["b"]  # a left in the same transaction as it gave its spaces up
    assert {s: leases[s].reason for s in ("s1", "s2")} == {
        "s1": "released: stopping: handed on", "s2": "released: handed to b: 2 managers share the spaces"}
    again = b.claim({"s1": "released by a", "s2": "released by a"})
    assert {s: lease.epoch for s, lease in again.items()} == {"s1": 2, "s2": 2}
    assert sorted((c["space"], c["epoch"], c["previous"], c["taken_over"]) for c in changes(store, 0)
                  if c["holder"] == "b") == [("s1", 2, "a", False), ("s2", 2, "a", False), ("s3", 1, "", False)]


def test_managers_alive_are_those_that_beat(store: Store) -> None:
    clock = Clock()
    a, b = LeaseTable(store, "a", 15.0, clock), LeaseTable(store, "b", 15.0, clock)
    a.beat()
    clock.at = 1010.0
    b.beat()
    assert sorted(a.look()[2]) == ["a", "b"]
    clock.at = 1016.0
    assert a.look()[2] == ["b"]
    b.release({}, leave=True)
    assert a.look()[2] == []


def holders(store: Store, clock: Clock) -> tuple[Holder, Holder, Clock, Clock]:
    here_a, here_b = Clock(0.0), Clock(0.0)
    a = Holder(store, ["sp"], SETTINGS, name="a", monotonic=here_a, database_clock=clock)
    b = Holder(store, ["sp"], SETTINGS, name="b", monotonic=here_b, database_clock=clock)
    return a, b, here_a, here_b


def test_a_write_under_a_lost_lease_is_fenced_and_changes_nothing(store: Store) -> None:
    clock = Clock()
    a, b, _, _ = holders(store, clock)
    a.round()
    assert a.holding() == ["sp"]
    store.fence = a
    version = store.write("sp", store.load("sp").version, [rec("m1", MachineState.REQUESTED)])
    clock.at += 16  # a was paused: its lease expired in the store, b takes the space over
    b.round()
    assert b.holding() == ["sp"]
    with pytest.raises(Fenced, match="no longer a's in the store"):  # a's own clock has not moved yet
        store.write("sp", version, [rec("m2", MachineState.REQUESTED)])
    assert isinstance(Fenced("x"), StaleState)
    store.fence = b
    assert [r.name for r in store.load("sp").records] == ["m1"]
    store.write("sp", store.load("sp").version, [rec("m3", MachineState.REQUESTED)])
    assert sorted(r.name for r in store.load("sp").records) == ["m1", "m3"]


def test_no_cloud_call_once_the_local_deadline_passed(store: Store) -> None:
    clock = Clock()
    a, _, here_a, _ = holders(store, clock)
    a.round()
    a.guard("sp")
    here_a.at += 14.1  # past lease_seconds less the margin, before the store's expiry
    with pytest.raises(LeaseLost, match="no cloud call made"):
        a.guard("sp")
    assert a.holding() == []
    store.fence = a
    with pytest.raises(Fenced):
        store.write("sp", 0, [rec("m1", MachineState.REQUESTED)])


def test_a_manager_leaving_hands_its_spaces_on(store: Store) -> None:
    clock = Clock()
    a, b, _, _ = holders(store, clock)
    a.round()
    b.round()
    assert (a.holding(), b.holding()) == (["sp"], [])
    store.fence = a
    with a.cycling(["sp"]):
        a.guard("sp")
        a.stopping()
        a.round()
        assert a.holding() == ["sp"]  # being cycled: kept until its cycle ends
        with pytest.raises(HandedOn, match="stopping and hands the space on; no cloud call made"):
            a.guard("sp")  # the cycle in progress ends at its next cloud call
        store.write("sp", 0, [rec("m1", MachineState.REQUESTED)])  # the outcome of a call already made: written
    store.fence = None
    a.round()
    assert a.holding() == []  # released at the round after its cycle ended
    b.round()
    assert b.holding() == ["sp"]
    assert status(store)[1][0].reason == "released by a (stopping: handed on)"


def test_a_manager_leaving_stays_out_of_the_managers_alive_while_it_renews_what_it_still_cycles(store: Store) -> None:
    clock = Clock()
    here_a, here_b = Clock(0.0), Clock(0.0)
    a = Holder(store, ["s1", "s2"], SETTINGS, name="a", monotonic=here_a, database_clock=clock)
    b = Holder(store, ["s1", "s2"], SETTINGS, name="b", monotonic=here_b, database_clock=clock)
    a.round()
    b.round()
    clock.at += 1
    a.round()  # hands b its share
    b.round()
    mine = a.holding()
    assert len(mine) == 1 and len(b.holding()) == 1
    with a.cycling(mine):
        a.stopping()
        a.round()  # leaves the managers alive at once
        here_a.at += 6  # its cycle goes on past lease_renew_seconds: the space it cycles is renewed
        clock.at += 1
        a.round()
        assert a.table.look()[2] == ["b"]  # renewed, but not back among the managers alive
        assert a.holding() == mine
    a.round()  # the cycle is over: handed on
    b.round()
    assert b.holding() == ["s1", "s2"]  # b takes it, and is not told to hand its own to a manager leaving


def test_lease_settings_are_checked_together() -> None:
    with pytest.raises(ConfigError, match=r"lease_renew_seconds .* at most a third of lease_seconds"):
        load_text("[settings]\nlease_seconds = 10\nlease_renew_seconds = 5\n")
    settings = load_text("[settings]\nlease_seconds = 30\nlease_renew_seconds = 10\n").settings
    assert (settings.lease_seconds, settings.lease_renew_seconds) == (30.0, 10.0)


def test_on_postgresql_the_lease_runs_on_the_databases_clock(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        table = LeaseTable(store, "a", 2.0)
        got = table.claim({"sp": "never held before"}).get("sp")
        assert got is not None and abs(got.expires - got.since - 2.0) < 1e-6
        assert abs(got.since - time.time()) < 5  # the database's clock, here the same host's
        assert LeaseTable(store, "b", 2.0).claim({"sp": "try"}).get("sp") is None
        time.sleep(2.1)
        taken = LeaseTable(store, "b", 2.0).claim({"sp": "taken over"}).get("sp")
        assert taken is not None and taken.epoch == 2
    finally:
        store.close()


def test_on_postgresql_another_manager_hears_at_once_that_leases_were_given_up(postgres_url: str) -> None:
    from vcycle.store.leases import Listener

    store = Store.open(postgres_url)
    a, b = LeaseTable(store, "a", 15.0), LeaseTable(store, "b", 15.0)
    hears_b, hears_a = Listener(store, "b"), Listener(store, "a")
    try:
        assert hears_b.wait(0.2) is False and hears_a.wait(0.01) is False  # both listening; nothing given up yet
        assert a.claim({"sp": "first"}).get("sp") is not None
        assert hears_b.wait(0.2) is False  # a claim is no news
        a.release({"sp": "handed on"})
        started = time.monotonic()
        assert hears_b.wait(5.0) is True
        assert time.monotonic() - started < 1.0
        assert hears_a.wait(0.2) is False  # a manager is not woken by its own release
        assert b.claim({"sp": "given up by a"}).get("sp") is not None
    finally:
        hears_a.close()
        hears_b.close()
        store.close()


def test_where_it_cannot_listen_a_wait_only_waits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vcycle.store.leases import Listener

    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    started = time.monotonic()
    assert Listener(store, "a").wait(0.1) is False
    assert time.monotonic() - started >= 0.1
    store.close()
