"""Opening the state store's database: the engine for a URL, its migration, and what its failures mean.

SQLite (WAL, one writer at a time) is the embedded default, PostgreSQL
(psycopg 3) the store of several managers. A store opened ``readonly`` (for
``vcycle status``, ``machines`` and ``plan``) writes nothing, not even
SQLite's ``-shm`` and ``-wal`` files: it reads a database that a writer made
and migrated, and says so when there is none yet. Failures are put in a site
admin's words, naming the file: a full disk, a read-only file or directory.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from vcycle.errors import NoStore, StoreError

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def shown(url: str | URL) -> str:
    """The URL as it may be shown: its password masked."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"state_url {shown(url)!r} is not a database URL") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(parsed: URL) -> str | None:
    """The file of an SQLite URL (None for other databases and for memory)."""
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """The engine of the store at ``url``. StoreError names what is wrong with it."""
    parsed = parse(url)
    path = sqlite_path(parsed)
    try:
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, pool_pre_ping=True, pool_size=16, max_overflow=64)
        if path is None:
            engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif readonly:
            return _readonly_sqlite(path)
        else:
            _make_directory(os.path.dirname(path))
            writable(path)
            engine = create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=32,
                                   max_overflow=128)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"state_url {shown(url)}: no driver for {parsed.drivername!r} is installed; use "
                         "sqlite:////PATH, or postgresql+psycopg://... with pip install vcycle[postgres]") from exc

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    return engine


def _make_directory(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {directory}: {exc.strerror}") from exc


def writable(path: str) -> None:
    """StoreError unless this user may write the database and make its ``-wal`` and ``-shm`` beside it, checked
    before SQLite makes either (a failed open would leave a ``-shm`` as read-only as the database)."""
    directory = os.path.dirname(path)
    for target, what in ((path, "the state store"), (directory, "the state directory")):
        if os.path.exists(target) and not os.access(target, os.W_OK):
            raise StoreError(f"{what} {target} is read-only for this user: run vcycle as the user owning it "
                             "(status, machines and plan only read, and work as any user who can read it)")


def _readonly_sqlite(path: str) -> Engine:
    """SQLite opened read-only: ``mode=ro``, and ``immutable`` when no writer's WAL is there to read (then no
    ``-shm`` is made either)."""
    if not os.path.exists(path):
        raise NoStore(f"there is no state store at {path} yet: vcycle cycle or vcycle daemon make it")
    options = "mode=ro" + ("" if os.path.exists(path + "-wal") else "&immutable=1")
    return create_engine(f"sqlite:///file:{quote(path)}?{options}&uri=true",
                         connect_args={"timeout": 60, "check_same_thread": False}, poolclass=StaticPool)


MIGRATION_LOCK = 0x76637963  # PostgreSQL advisory lock key ("vcyc") held while one manager migrates


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration, all or nothing (quietly: alembic's INFO lines are not vcycle's).

    On SQLite the migration runs in one ``BEGIN IMMEDIATE`` transaction: Python's sqlite3 starts transactions
    only before data changes, so each CREATE TABLE would otherwise commit at once, and a run killed part way
    would leave tables that the next run's migration fails on. It also keeps two first runs from migrating
    together, as PostgreSQL's advisory lock does."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS)
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":  # managers starting together migrate one after another
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            elif connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        alembic_log.setLevel(level)


def check_current(engine: Engine) -> None:
    """A store opened read-only must already be at the newest migration (it cannot migrate itself)."""
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS)
    newest = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != newest:
        raise StoreError(f"the state store is at schema {current or 'none'}, this vcycle needs {newest}: a cycle "
                         "(vcycle cycle --once, or the daemon) migrates it")


def reason(exc: BaseException, url: str | None = None) -> str:
    """What a database failure means, in a site admin's words, with the file or disk it is about."""
    text = _first_line(exc)
    lowered = text.lower()
    path = sqlite_path(parse(url)) if url else None
    if path is not None:
        if "readonly database" in lowered or "read-only" in lowered or _errno(exc) == errno.EROFS:
            return f"{path} (or its directory) is read-only: {text}"
        if "disk is full" in lowered or "disk i/o error" in lowered or _errno(exc) == errno.ENOSPC:
            free = _free_bytes(os.path.dirname(path))
            if "disk is full" in lowered or _errno(exc) == errno.ENOSPC or (free is not None and free < 1 << 20):
                return f"the disk holding {path} is full ({free if free is not None else '?'} bytes free)"
    return text


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, OperationalError) and exc.orig is not None:
        return str(exc.orig).strip().splitlines()[0]
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _errno(exc: BaseException) -> int | None:
    found = getattr(exc, "errno", None)
    if found is None and isinstance(exc, SQLAlchemyError):
        found = getattr(getattr(exc, "orig", None), "errno", None)
    return found if isinstance(found, int) else None


def _free_bytes(directory: str) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None
