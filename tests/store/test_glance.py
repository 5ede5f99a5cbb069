"""A round's read ahead (Store.glance): one transaction for every space's version, new heartbeats and the month's
spending, after which a steady space's look reads nothing of its own; and never a look that differs from one
made without it (SQLite and the real PostgreSQL server of this machine)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text

from vcycle.core.model import Heartbeat, MachineRecord, new_record, transition
from vcycle.core.states import MachineState
from vcycle.errors import StaleState
from vcycle.store import Store

S = MachineState
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SPACES = ("sp0", "sp1", "sp2")


def record(space: str, name: str, now: datetime) -> MachineRecord:
    made = new_record(name=name, space=space, machinetype="mt", state=S.REQUESTED, processors=1, now=now,
                      request_id="r-" + name, reason="intent", manager="mgr")
    return transition(made, S.STARTING, now, "created")


def count_machines(c: Connection) -> int:
    return int(c.execute(text("SELECT count(*) FROM machines")).scalar_one())


def transactions(store: Store) -> list[bool]:
    """Every transaction the store begins from now on (True: a write)."""
    begun: list[bool] = []
    original = store._begin

    def counted(write: bool = False) -> Any:
        begun.append(write)
        return original(write)
    store._begin = counted  # type: ignore[method-assign]
    return begun


def test_after_a_glance_a_steady_space_s_look_reads_nothing_of_its_own(store: Store, store_url: str) -> None:
    for n, space in enumerate(SPACES):
        store.write(space, store.load(space).version, [record(space, f"{space}-a", T0)])
        store.put_heartbeats([(space, Heartbeat(f"{space}-a", T0 + timedelta(seconds=n)))])
        store.look(space)  # each space read once: its records cached and its heartbeats known
    other = Store.open(store_url)  # the HTTPS endpoint in another process
    other.put_heartbeats([("sp1", Heartbeat("sp1-b", T0 + timedelta(seconds=60)))])
    other.close()
    begun = transactions(store)
    store.glance(SPACES, count_machines)
    looked = {space: store.look(space, count_machines) for space in SPACES}
    assert begun == [False]  # the glance's one read; the looks read nothing
    assert {space: sorted(beats) for space, (_, beats, _) in looked.items()} == {
        "sp0": ["sp0-a"], "sp1": ["sp1-a", "sp1-b"], "sp2": ["sp2-a"]}
    assert {found for _, _, found in looked.values()} == {3}
    assert store.look("sp0", count_machines)[2] == 3 and begun == [False, False]  # used once: then read again


def test_a_look_reads_for_itself_what_its_own_store_wrote_since_the_glance(store: Store, store_url: str) -> None:
    """A look gives the round's view as of the glance: what this store wrote since is read again, what another
    writer wrote since comes with the next round, and a write under the glanced version fails as a write after
    any look that another writer overtook (StaleState: the cycle reads afresh next time)."""
    for space in SPACES:
        store.write(space, store.load(space).version, [record(space, f"{space}-a", T0)])
        store.look(space)
    store.put_heartbeats([("sp2", Heartbeat("sp2-a", T0 + timedelta(seconds=10)))])
    store.glance(SPACES, count_machines)
    store.write("sp0", store.load("sp0").version, [record("sp0", "sp0-b", T0)])  # this store, after the glance
    other = Store.open(store_url)  # an operator's command, after the glance too
    other.write("sp1", other.load("sp1").version, [record("sp1", "sp1-b", T0)])
    other.close()
    begun = transactions(store)
    state, _, found = store.look("sp0", count_machines)
    assert sorted(r.name for r in state.records) == ["sp0-a", "sp0-b"] and found == 5 and begun == [False]
    state, _, found = store.look("sp1", count_machines)
    assert [r.name for r in state.records] == ["sp1-a"] and found == 3 and begun == [False]  # as of the glance
    with pytest.raises(StaleState):
        store.write("sp1", state.version, [record("sp1", "sp1-c", T0)])
    state, _, found = store.look("sp1", count_machines)  # the next round's own read
    assert sorted(r.name for r in state.records) == ["sp1-a", "sp1-b"] and found == 5
    other = Store.open(store_url)
    other.put_heartbeats([("sp2", Heartbeat("sp2-a", T0 + timedelta(seconds=20)))])
    other.close()
    assert store.heartbeats("sp2")["sp2-a"].at == T0 + timedelta(seconds=20)  # read after the glance, not by it
    state, beats, found = store.look("sp2")
    assert beats["sp2-a"].at == T0 + timedelta(seconds=20)  # the glance's older beat is not taken
    assert found is None and [r.name for r in state.records] == ["sp2-a"]  # no other read asked for: none given
    store.glance(SPACES, count_machines)
    _, _, found = store.look("sp2", lambda c: -1)  # another read than the glance's: its own
    assert found == -1
    store.glance(["sp9"])  # a space never read before is left to its look
    assert store._glanced == {}


def test_looks_after_glances_are_the_looks_without_them_over_random_histories(store: Store,
                                                                              store_url: str) -> None:
    """Two stores cycle the same spaces, one glancing ahead of every round and the other not, while a third
    writes records and heartbeats at random times between and within rounds. The glancing store's look gives
    what the other's gave at the moment of the glance, where it knew the space's records as they were then and
    did not write them since; otherwise what the other's gives at the moment of the look. What the third writes
    after a glance comes with the next round."""
    rng = random.Random(11)
    clock = [T0]
    glancing, plain, other = Store.open(store_url), Store.open(store_url), Store.open(store_url)
    for s in (glancing, plain, other):
        s.clock = lambda: clock[0]  # heartbeats are read by when they were written
    made = 0
    written: set[str] = set()  # spaces the glancing store wrote since the round's glance

    def meddle() -> None:
        nonlocal made
        clock[0] += timedelta(seconds=rng.uniform(0, 45))
        space = rng.choice(SPACES)
        if rng.random() < 0.4:
            made += 1
            other.write(space, other.load(space).version, [record(space, f"m{made}", clock[0])])
        else:
            other.put_heartbeats([(sp, Heartbeat(f"m{rng.randint(1, max(made, 1))}", clock[0]))
                                  for sp in rng.sample(SPACES, rng.randint(1, 3))])

    def seen(look: tuple[Any, Any, Any]) -> tuple[Any, ...]:
        state, beats, found = look
        return (state.version, sorted((r.name, r.state) for r in state.records),
                sorted((n, b.at) for n, b in beats.items()), found)

    try:
        known = {space: glancing.look(space)[0].version for space in SPACES}  # the versions the glancing one read
        looks = {"glanced": 0, "read again": 0}
        for _ in range(150):
            for _ in range(rng.randint(0, 3)):
                meddle()
            glancing.glance(SPACES, count_machines)
            then = {space: seen(plain.look(space, count_machines)) for space in SPACES}
            written.clear()
            for space in rng.sample(SPACES, rng.randint(1, 3)):  # a space skipped keeps no stale read
                if rng.random() < 0.3:
                    meddle()
                mine = seen(glancing.look(space, count_machines))
                if space in written or known[space] != then[space][0]:
                    assert mine == seen(plain.look(space, count_machines))
                    looks["read again"] += 1
                else:
                    assert mine == then[space]
                    looks["glanced"] += 1
                known[space] = mine[0]
                if rng.random() < 0.3:  # the cycle writes its own space
                    clock[0] += timedelta(seconds=1)
                    made += 1
                    known[space] = glancing.write(space, glancing.load(space).version,
                                                  [record(space, f"m{made}", clock[0])])
                    written.add(space)
        assert looks["glanced"] > 150 and looks["read again"] > 20, looks
    finally:
        for s in (glancing, plain, other):
            s.close()
