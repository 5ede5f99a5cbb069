"""A store in memory (``sqlite://``: a simulation's, and the empty store `vcycle status` shows before the first
run): one SQLite connection, kept for the store's life, on which every transaction takes its turn."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from vcycle.core.model import new_record
from vcycle.core.states import MachineState
from vcycle.errors import StaleState
from vcycle.store import Store

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_a_store_in_memory_keeps_one_connection_for_every_transaction() -> None:
    store = Store.open("sqlite://")
    try:
        seen = []
        for _ in range(3):
            with store._begin() as c:
                seen.append(c)
        assert len({id(c) for c in seen}) == 1
        assert store.load("sp").version == 0  # and it works as a store
    finally:
        store.close()


def test_threads_sharing_a_store_in_memory_take_turns_reads_and_writes_alike() -> None:
    """Eight threads write and read one store in memory at once: every write lands once, no read meets another
    thread's open transaction on the one connection."""
    store = Store.open("sqlite://")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                space = f"sp{n}"
                record = new_record(name=f"m{n}-{i}", space=space, machinetype="mt", state=MachineState.REQUESTED,
                                    processors=1, now=T0, request_id=f"r{n}-{i}", reason="intent", manager="mgr")
                while True:
                    try:
                        store.write(space, store.load(space).version, [record])
                        break
                    except StaleState:
                        continue
                store.heartbeats(space)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert [len(store.load(f"sp{n}").records) for n in range(8)] == [25] * 8
    finally:
        store.close()
