"""Joboutputs on both shelves: files on this host, rows of the store (SQLite and the real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vcycle.errors import JoboutputsError
from vcycle.store import Store
from vcycle.store.joboutputs import Files, Joboutputs, Rows


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["files", "sqlite", "postgresql"])
def shelf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Joboutputs, Clock]]:
    clock = Clock()
    if request.param == "files":
        yield Joboutputs(Files(str(tmp_path / "jo")), 100, 250), clock
        return
    url = f"sqlite:///{tmp_path}/state.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store.open(url)
    yield Joboutputs(Rows(store, clock), 100, 250), clock
    store.close()


def test_files_are_kept_replaced_listed_and_limited(shelf: tuple[Joboutputs, Clock]) -> None:
    jo, _ = shelf
    assert jo.read("sp", "m1", "pilot.log") is None and jo.sizes("sp", "m1") == []
    jo.write("sp", "m1", "pilot.log", b"x" * 100)
    jo.write("sp", "m1", "pilot.log", b"y" * 90)  # replaced, not added to what the machine keeps
    jo.write("sp", "m1", "vm-heartbeat", b"1\n", durable=False)
    jo.write("sp", "m2", "pilot.log", b"other")
    assert jo.read("sp", "m1", "pilot.log") == b"y" * 90
    assert jo.sizes("sp", "m1") == [("pilot.log", 90), ("vm-heartbeat", 2)]
    assert jo.names("sp", "m2") == ["pilot.log"]
    with pytest.raises(JoboutputsError, match="at most 100 are kept") as big:
        jo.write("sp", "m1", "core", b"z" * 101)
    assert big.value.status == 413
    jo.write("sp", "m1", "a", b"a" * 100)
    with pytest.raises(JoboutputsError, match="already keeps 192 bytes"):
        jo.write("sp", "m1", "b", b"b" * 60)
    assert jo.names("sp", "m1") == ["a", "pilot.log", "vm-heartbeat"]  # nothing of the refused file kept


@pytest.mark.parametrize("space, machine, name", [("sp", "m1", "../etc"), ("sp", "m1", ".hidden"),
                                                  ("..", "m1", "log"), ("sp", "a/b", "log")])
def test_unsafe_names_are_refused_on_either_shelf(shelf: tuple[Joboutputs, Clock], space: str, machine: str,
                                                  name: str) -> None:
    jo, _ = shelf
    with pytest.raises(JoboutputsError) as refused:
        jo.write(space, machine, name, b"x")
    assert refused.value.status == 400
    with pytest.raises(JoboutputsError):
        jo.read(space, machine, name)


def test_rows_of_machines_gone_longer_than_their_keep_time_are_removed(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    jo = Joboutputs(Rows(store, clock), 100, 250)
    jo.write("sp", "old", "log", b"1")
    jo.write("sp", "live", "log", b"2")
    clock.now += 3600
    jo.write("sp", "recent", "log", b"3")
    clock.now += 3 * 3600
    assert jo.cleanup({("sp", "live")}, lambda space: 3.5 * 3600, clock.now) == 1
    assert [jo.names("sp", m) for m in ("old", "live", "recent")] == [[], ["log"], ["log"]]
    store.close()
