"""Store fixtures: the same contract runs on SQLite and on a real PostgreSQL.

PostgreSQL is the session's private server (tests/conftest.py, postgres_server), or the one at
VCYCLE_TEST_POSTGRES_URL. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from vctest import unavailable

from vcycle.store import Store


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"vcycle_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        unavailable("PostgreSQL", f"{make_url(postgres_server).render_as_string()}: {str(exc.orig).splitlines()[0]}")
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()
