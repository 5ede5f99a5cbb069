"""A store's migration is all or nothing: a first run that fails or is killed part way leaves a database the
next run migrates from the start (SQLite files and a real PostgreSQL server of this machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect

from vcycle.store import Store
from vcycle.store.engine import make_engine, migrate

LATE_TABLE = "CREATE TABLE leases"  # made by a late migration (0016), after most tables exist


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("postgres_url"))


def test_a_migration_that_fails_part_way_leaves_no_table_and_the_next_open_migrates(url: str) -> None:
    engine = make_engine(url)

    @event.listens_for(engine, "before_cursor_execute")
    def _fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.strip().startswith(LATE_TABLE):
            raise RuntimeError("planted: the disk went away")

    with pytest.raises(RuntimeError, match="planted"):
        migrate(engine)
    engine.dispose()
    assert _tables(url) == set()  # before the fix, SQLite kept spaces, machines, ... and no alembic_version
    store = Store.open(url)
    try:
        assert store.load("sp").version == 0
    finally:
        store.close()
    assert {"spaces", "leases", "alembic_version"} <= _tables(url)


def test_a_first_cycle_killed_while_it_migrates_leaves_a_store_the_next_one_opens(tmp_path: Path) -> None:
    """The way the failure was met: a process SIGKILLed in its first migration (here held at the late table
    until killed), then a new process opening the same SQLite file."""
    url = f"sqlite:///{tmp_path}/state.db"
    held = textwrap.dedent(f"""
        import sys, time
        from sqlalchemy import event
        from vcycle.store.engine import make_engine, migrate
        engine = make_engine({url!r})
        @event.listens_for(engine, "before_cursor_execute")
        def _hold(_c, _k, statement, *_a):
            if statement.strip().startswith({LATE_TABLE!r}):
                print("holding", flush=True)
                time.sleep(60)
        migrate(engine)
    """)
    process = subprocess.Popen([sys.executable, "-c", held], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    store = Store.open(url)
    try:
        assert store.load("sp").version == 0
    finally:
        store.close()
