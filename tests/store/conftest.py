"""Store fixtures: the same contract runs on SQLite and on a real PostgreSQL.

PostgreSQL is the session's private server (tests/conftest.py, postgres_server), or the one at
VCYCLE_TEST_POSTGRES_URL. Each test gets a database of its own, dropped afterwards (tests/conftest.py, postgres_url).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vcycle.store import Store


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
