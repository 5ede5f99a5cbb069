"""Store fixtures: the same contract runs on SQLite and on the real PostgreSQL here.

PostgreSQL is reached at VCYCLE_TEST_POSTGRES_URL (default: the local server
on 127.0.0.1:5432 as user postgres). Each test gets a database of its own,
dropped afterwards. Where no server answers the tests skip and say why,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from vcycle.store import Store

ADMIN_URL = os.environ.get("VCYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _postgres_admin():  # type: ignore[no-untyped-def]
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as c:
            c.execute(text("select 1"))
    except OperationalError as exc:
        engine.dispose()
        reason = f"no PostgreSQL at {make_url(ADMIN_URL).render_as_string()}: {str(exc.orig).splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: the PostgreSQL tests must run)")
        pytest.skip(reason)
    return engine


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin = _postgres_admin()
    name = f"vcycle_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
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
