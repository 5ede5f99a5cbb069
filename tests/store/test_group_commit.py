"""Writes of several spaces made at the same moment share one transaction (vcycle/store/group.py), on SQLite and
on the real PostgreSQL server of this machine, and each is still kept or refused on its own.

The first write is held inside its transaction by a step that waits; the writes made meanwhile queue behind it, and
the first of them commits the rest together once it is let go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, event

from vcycle.core.model import MachineRecord, new_record
from vcycle.core.states import MachineState
from vcycle.errors import Fenced, StaleState
from vcycle.store import Store
from vcycle.store.group import Group

T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
QUEUED = 6  # writes queued behind the held one


def record(space: str, name: str) -> MachineRecord:
    return new_record(name=name, space=space, machinetype="mt", state=MachineState.REQUESTED, processors=1, now=T0,
                      request_id="req-" + name, reason="intent: test", manager="mgr")


def commits(store: Store) -> list[int]:
    """A list that grows by one for every transaction the store commits."""
    counted: list[int] = []
    event.listen(store.engine, "commit", lambda connection: counted.append(1))
    return counted


@contextmanager
def held_first_write(store: Store) -> Iterator[tuple[ThreadPoolExecutor, list[Future[int]]]]:
    """A write of space "first" held in its transaction until the block ends; the writes submitted to the pool
    meanwhile (the futures list) queue behind it. On leaving, they are let go and waited for."""
    holding, release = threading.Event(), threading.Event()

    def hold(c: Connection) -> None:
        holding.set()  # its group is taken: every write from now on queues behind it
        assert release.wait(30)

    futures: list[Future[int]] = []
    with ThreadPoolExecutor(max_workers=QUEUED + 1) as pool:
        first = pool.submit(store.write, "first", 0, [record("first", "f")], steps=[hold])
        deadline = time.monotonic() + 30
        assert holding.wait(30)
        yield pool, futures
        while store._writes.queued < 1 + len(futures):
            assert time.monotonic() < deadline, "the writes did not queue behind the held one"
            time.sleep(0.01)
        release.set()
        assert first.result(30) == 1
        for future in futures:
            future.exception(30)


def write(pool: ThreadPoolExecutor, futures: list[Future[int]], store: Store, space: str, version: int,
          **kwargs: object) -> None:
    made = record(space, space + "-m")
    assert made.last is not None
    futures.append(pool.submit(store.write, space, version, [made], [(made.name, made.last)],
                               **kwargs))  # type: ignore[arg-type]


def test_writes_queued_behind_a_commit_share_one_transaction(store: Store) -> None:
    counted = commits(store)
    with held_first_write(store) as (pool, futures):
        for i in range(QUEUED):
            write(pool, futures, store, f"sp{i}", 0)
    assert [f.result() for f in futures] == [1] * QUEUED
    assert len(counted) == 2  # the held write's transaction, then one for all the writes queued behind it
    for i in range(QUEUED):
        state = store.load(f"sp{i}")
        assert (state.version, [r.name for r in state.records]) == (1, [f"sp{i}-m"])
        assert [h.reason for h in store.history(f"sp{i}", f"sp{i}-m")] == ["intent: test"]


def test_a_stale_write_in_a_group_is_refused_alone(store: Store) -> None:
    assert store.write("late", 0, [record("late", "old")]) == 1
    with held_first_write(store) as (pool, futures):
        write(pool, futures, store, "a", 0)
        write(pool, futures, store, "late", 0)  # read at version 0, but version 1 was committed since
        write(pool, futures, store, "c", 0)
    assert futures[0].result() == 1 and futures[2].result() == 1
    with pytest.raises(StaleState, match="space late: another writer committed after version 0"):
        futures[1].result()
    assert [r.name for r in store.load("late").records] == ["old"]
    assert [r.name for r in store.load("a").records] == ["a-m"]
    assert [r.name for r in store.load("c").records] == ["c-m"]


def test_two_writes_of_one_space_read_at_one_version_in_one_group_one_wins(store: Store) -> None:
    with held_first_write(store) as (pool, futures):
        write(pool, futures, store, "twice", 0)
        futures.append(pool.submit(store.write, "twice", 0, [record("twice", "second")]))
    assert futures[0].result() == 1
    with pytest.raises(StaleState):
        futures[1].result()
    assert [r.name for r in store.load("twice").records] == ["twice-m"]


def test_a_failing_step_in_a_group_fails_its_own_write_only(store: Store) -> None:
    def broken(c: Connection) -> None:
        raise RuntimeError("the claim failed")

    with held_first_write(store) as (pool, futures):
        write(pool, futures, store, "a", 0)
        write(pool, futures, store, "b", 0, steps=[broken])
        write(pool, futures, store, "c", 0)
    assert futures[0].result() == 1 and futures[2].result() == 1
    with pytest.raises(RuntimeError, match="the claim failed"):
        futures[1].result()
    assert store.load("b").records == ()
    assert (store.load("a").version, store.load("c").version) == (1, 1)


def test_a_group_leader_whose_commit_fails_before_taking_fails_alone_and_the_next_leads() -> None:
    """Group alone, no database: a commit that fails before it takes its group fails its own write; the writes
    queued behind it are committed by the next leader, in the order they came."""
    group: Group[str] = Group()
    committed: list[list[str]] = []
    gate = threading.Event()

    def commit(take: Callable[[], list]) -> None:  # type: ignore[type-arg]
        assert gate.wait(30)
        entries = take()
        if entries[0].request == "broken":
            raise OSError("no database")
        committed.append([e.request for e in entries])
        for n, e in enumerate(entries):
            e.version = n + 1

    def failing_before_take(take: Callable[[], list]) -> None:  # type: ignore[type-arg]
        assert gate.wait(30)
        raise OSError("no connection")

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(group.run, "first", failing_before_take)
        while group.queued < 1:
            time.sleep(0.01)
        rest = [pool.submit(group.run, name, commit) for name in ("a", "b", "c")]
        while group.queued < 4:
            time.sleep(0.01)
        gate.set()
        with pytest.raises(OSError, match="no connection"):
            first.result(30)
        assert [f.result(30) for f in rest] == [1, 2, 3]
    assert committed == [["a", "b", "c"]]


def test_many_writers_of_few_spaces_keep_every_version_exactly_once(store: Store) -> None:
    """8 threads each read and write 4 spaces 25 times over: every write that returned a version is kept, with
    its history, and a space's version counts exactly the writes of it that won (the others were stale)."""
    won: dict[str, list[int]] = {f"s{i}": [] for i in range(4)}
    lock = threading.Lock()

    def writer(n: int) -> None:
        for k in range(25):
            space = f"s{(n + k) % 4}"
            made = record(space, f"w{n}-{k}")
            assert made.last is not None
            try:
                version = store.write(space, store.load(space).version, [made], [(made.name, made.last)])
            except StaleState:
                continue
            with lock:
                won[space].append(version)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(writer, n) for n in range(8)]:
            future.result(120)
    for space, versions in won.items():
        state = store.load(space)
        assert sorted(versions) == list(range(1, state.version + 1))  # each version given out once, none lost
        assert len(state.records) == len(versions)
        assert sum(len(store.history(space, r.name)) for r in state.records) == len(versions)


def test_a_group_takes_writes_up_to_its_rows_and_the_rest_go_in_the_next() -> None:
    """Group alone: with room for 5 rows, writes of 3, 2, 4 and 1 rows queued together are committed as [3, 2]
    then [4, 1], each group in its own commit and in the order they came; a write larger than the room still goes,
    alone."""
    group: Group[str] = Group(size=len, rows=5)
    committed: list[list[str]] = []
    gate = threading.Event()

    def commit(take: Callable[[], list]) -> None:  # type: ignore[type-arg]
        assert gate.wait(30)
        entries = take()
        committed.append([e.request for e in entries])
        for e in entries:
            e.version = len(committed)

    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(group.run, "xxxxxxx", commit)  # 7 rows: more than the room, alone
        while group.queued < 1:
            time.sleep(0.01)
        rest = []
        for request in ("aaa", "bb", "cccc", "d"):
            rest.append(pool.submit(group.run, request, commit))
            while group.queued < 1 + len(rest):  # queued in this order
                time.sleep(0.01)
        gate.set()
        assert first.result(30) == 1
        assert [f.result(30) for f in rest] == [2, 2, 3, 3]
    assert committed == [["xxxxxxx"], ["aaa", "bb"], ["cccc", "d"]]


class FenceOf:
    """The store's fence where managers share it, with the lease of ``lost`` gone (vcycle/loop/leases.py)."""

    def __init__(self, lost: str) -> None:
        self.lost = lost

    def check(self, connection: Connection, space: str) -> None:
        if space == self.lost:
            raise Fenced(f"space {space}: this manager no longer holds its lease; nothing written")


def test_a_fenced_write_in_a_group_is_refused_alone_and_writes_nothing(store: Store) -> None:
    """A manager that lost one space's lease: its write of that space, queued with writes of spaces it still
    holds, is refused (Fenced) and leaves nothing, and the others land."""
    store.fence = FenceOf("lost")
    with held_first_write(store) as (pool, futures):
        write(pool, futures, store, "a", 0)
        write(pool, futures, store, "lost", 0)
        write(pool, futures, store, "c", 0)
    assert futures[0].result() == 1 and futures[2].result() == 1
    with pytest.raises(Fenced, match="no longer holds its lease"):
        futures[1].result()
    store.fence = None
    assert store.load("lost").records == ()
    assert [r.name for r in store.load("a").records] == ["a-m"]
    assert [r.name for r in store.load("c").records] == ["c-m"]
