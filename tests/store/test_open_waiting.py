"""A daemon's store at start: a PostgreSQL server that answers late is waited for, several managers migrating
one fresh database at once do so one after another (real PostgreSQL servers of this machine)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from vcycle.errors import StoreError
from vcycle.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


def test_a_server_that_answers_late_is_waited_for(tmp_path: Path) -> None:
    import services

    server = services.postgresql(tmp_path / "postgresql")
    assert server.restart is not None
    said: list[str] = []
    try:
        down = threading.Thread(target=server.restart, args=(3.0,))  # down for 3 s from now
        down.start()
        opened = Store.open_waiting(server.url, say=said.append)
        down.join()
        assert opened.load("sp").version == 0
        opened.close()
        assert said and all("trying again in" in s for s in said)
    finally:
        server.stop()


def test_other_errors_and_sqlite_are_not_waited_for(tmp_path: Path) -> None:
    slept: list[float] = []
    with pytest.raises(StoreError, match="not a database URL"):
        Store.open_waiting("not a url", sleep=slept.append)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError):
        Store.open_waiting(f"sqlite:///{blocked}/sub/state.db", sleep=slept.append)
    with pytest.raises(StoreError, match="cannot open the state store"):  # nobody listens there: waited, then told
        Store.open_waiting("postgresql://nobody:secret@127.0.0.1:1/none", patience=3.0, sleep=slept.append)
    assert slept == [1.0, 2.0]


def test_managers_opening_one_fresh_database_at_once_all_open_it(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            Store.open(postgres_url).close()
        except BaseException as exc:  # noqa: BLE001 - kept for the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "concurrent migrations stuck on each other"
    assert errors == []
