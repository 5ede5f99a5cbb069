"""The SQLAlchemy Core implementation of the state store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from vcycle.errors import StaleState, StoreError
from vcycle.model import Backoff, CycleReport, Heartbeat, MachineRecord, StatusChange
from vcycle.states import MachineState
from vcycle.store import schema

_MACHINE_COLUMNS = [c.name for c in schema.machines.columns]


@dataclass(frozen=True, slots=True)
class SpaceState:
    """One space as read: its version, live records (not GONE), backoffs and drains."""

    space: str
    version: int
    records: tuple[MachineRecord, ...]
    backoffs: Mapping[str, Backoff] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"state_url {url!r} is not a database URL") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):
        engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        directory = os.path.dirname(os.path.abspath(parsed.database))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {directory}: {exc.strerror}") from exc
        engine = create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    return engine


def _migrate(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", os.path.join(os.path.dirname(__file__), "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _dialect_insert(connection: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _upsert(connection: Connection, table: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    if not rows:
        return
    statement = _dialect_insert(connection, table)
    updates = {c: statement.excluded[c] for c in rows[0] if c not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=updates), list(rows))


def _row(space: str, record: MachineRecord) -> dict[str, Any]:
    last = record.history[-1] if record.history else StatusChange(record.state, record.created_at, "")
    return {
        "space": space, "name": record.name, "machinetype": record.machinetype, "state": record.state.value,
        "state_since": last.at, "state_reason": last.reason, "processors": record.processors,
        "created_at": record.created_at, "request_id": record.request_id, "manager": record.manager,
        "cloud_id": record.cloud_id, "zone": record.zone, "flavor": record.flavor, "hs06": record.hs06,
        "started_at": record.started_at, "stopped_at": record.stopped_at, "shutdown_at": record.shutdown_at,
        "heartbeat_at": record.heartbeat_at, "shutdown_code": record.shutdown_code,
        "shutdown_text": record.shutdown_text, "delete_attempts": record.delete_attempts,
        "last_delete_at": record.last_delete_at, "delete_requested": record.delete_requested,
    }


def _record(row: Any) -> MachineRecord:
    state = MachineState(row.state)
    return MachineRecord(
        name=row.name, space=row.space, machinetype=row.machinetype, state=state, processors=row.processors,
        created_at=row.created_at, request_id=row.request_id, manager=row.manager, cloud_id=row.cloud_id,
        zone=row.zone, flavor=row.flavor, hs06=row.hs06, started_at=row.started_at, stopped_at=row.stopped_at,
        shutdown_at=row.shutdown_at, heartbeat_at=row.heartbeat_at, shutdown_code=row.shutdown_code,
        shutdown_text=row.shutdown_text, delete_attempts=row.delete_attempts, last_delete_at=row.last_delete_at,
        delete_requested=row.delete_requested, history=(StatusChange(state, row.state_since, row.state_reason),),
    )


class Store:
    """A migrated database holding vcycle's state; safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Store:
        """Open (and migrate) the store at ``url``; StoreError if it cannot be used."""
        engine = _engine(url)
        try:
            _migrate(engine)
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreError(f"cannot open the state store {make_url(url).render_as_string()}: "
                             f"{_reason(exc)}") from exc
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- one space, versioned -----------------------------------------------------------

    def load(self, space: str) -> SpaceState:
        """The space's live records (every state but GONE), backoffs and version."""
        with self._begin() as c:
            self._ensure_space(c, space)
            version, draining = c.execute(
                select(schema.spaces.c.version, schema.spaces.c.draining).where(schema.spaces.c.name == space)).one()
            rows = c.execute(select(schema.machines).where(
                schema.machines.c.space == space, schema.machines.c.state != MachineState.GONE.value)).all()
            backoffs = {r.machinetype: Backoff(r.machinetype, r.last_abort_at, r.reason) for r in c.execute(
                select(schema.backoffs).where(schema.backoffs.c.space == space))}
        return SpaceState(space, version, tuple(_record(r) for r in rows), backoffs, frozenset(json.loads(draining)))

    def write(self, space: str, version: int, records: Iterable[MachineRecord] = (),
              history: Iterable[tuple[str, StatusChange]] = (), backoffs: Mapping[str, Backoff] | None = None,
              draining: frozenset[str] | None = None) -> int:
        """Commit changes read at ``version`` atomically; the new version. Raises StaleState."""
        with self._begin() as c:
            self._ensure_space(c, space)
            values: dict[str, Any] = {"version": version + 1, "updated_at": datetime.now(UTC)}
            if draining is not None:
                values["draining"] = json.dumps(sorted(draining))
            done = c.execute(update(schema.spaces).where(
                schema.spaces.c.name == space, schema.spaces.c.version == version).values(**values))
            if done.rowcount != 1:
                raise StaleState(f"space {space}: another writer committed after version {version}")
            _upsert(c, schema.machines, [_row(space, r) for r in records], ("space", "name"))
            entries = [{"space": space, "name": n, "state": h.state.value, "at": h.at, "reason": h.reason}
                       for n, h in history]
            if entries:
                c.execute(insert(schema.history), entries)
            if backoffs is not None:
                _upsert(c, schema.backoffs, [{"space": space, "machinetype": b.machinetype,
                                              "last_abort_at": b.last_abort_at, "reason": b.reason}
                                             for b in backoffs.values()], ("space", "machinetype"))
        return version + 1

    # --- unversioned: machine signals and reports ----------------------------------------

    def heartbeats(self, space: str) -> dict[str, Heartbeat]:
        with self._begin() as c:
            rows = c.execute(select(schema.heartbeats).where(schema.heartbeats.c.space == space)).all()
        return {r.name: Heartbeat(r.name, r.at, r.shutdown_message, r.shutdown_message_at) for r in rows}

    def put_heartbeats(self, items: Iterable[tuple[str, Heartbeat]]) -> None:
        """Record heartbeats and shutdown messages in one batch (later values win)."""
        rows = {}
        for space, beat in items:
            rows[(space, beat.machine)] = {"space": space, "name": beat.machine, "at": beat.at,
                                           "shutdown_message": beat.shutdown_message,
                                           "shutdown_message_at": beat.shutdown_message_at}
        with self._begin() as c:
            _upsert(c, schema.heartbeats, list(rows.values()), ("space", "name"))

    def add_report(self, report: CycleReport) -> None:
        with self._begin() as c:
            c.execute(insert(schema.reports).values(space=report.space, started_at=report.started_at,
                                                    finished_at=report.finished_at, ok=report.ok,
                                                    summary=json.dumps(report.summary())))

    def last_reports(self) -> dict[str, dict[str, Any]]:
        """The newest cycle report of every space, as dicts."""
        with self._begin() as c:
            newest = select(func.max(schema.reports.c.id)).group_by(schema.reports.c.space)
            rows = c.execute(select(schema.reports).where(schema.reports.c.id.in_(newest))).all()
        return {r.space: {"started_at": r.started_at.isoformat(), "finished_at": r.finished_at.isoformat(),
                          "ok": r.ok, **json.loads(r.summary)} for r in rows}

    # --- reading for people -------------------------------------------------------------

    def spaces(self) -> dict[str, SpaceState]:
        """Every space the store knows, as load() reads it."""
        with self._begin() as c:
            names = c.execute(select(schema.spaces.c.name).order_by(schema.spaces.c.name)).scalars().all()
        return {name: self.load(name) for name in names}

    def find(self, name: str, space: str | None = None) -> list[MachineRecord]:
        """Records named ``name`` (in any state), in one space or all."""
        query = select(schema.machines).where(schema.machines.c.name == name)
        if space is not None:
            query = query.where(schema.machines.c.space == space)
        with self._begin() as c:
            return [_record(r) for r in c.execute(query)]

    def history(self, space: str, name: str) -> list[StatusChange]:
        with self._begin() as c:
            rows = c.execute(select(schema.history).where(schema.history.c.space == space,
                                                          schema.history.c.name == name)
                             .order_by(schema.history.c.id)).all()
        return [StatusChange(MachineState(r.state), r.at, r.reason) for r in rows]

    def purge(self, space: str, before: datetime) -> int:
        """Forget machines GONE before ``before``, their history and heartbeats; how many."""
        with self._begin() as c:
            old = select(schema.machines.c.name).where(
                schema.machines.c.space == space, schema.machines.c.state == MachineState.GONE.value,
                schema.machines.c.state_since < before)
            names = c.execute(old).scalars().all()
            for table in (schema.history, schema.heartbeats, schema.machines):
                c.execute(delete(table).where(table.c.space == space, table.c.name.in_(names)))
            c.execute(delete(schema.reports).where(schema.reports.c.space == space,
                                                   schema.reports.c.finished_at < before))
        return len(names)

    # --- machinery ----------------------------------------------------------------

    def _begin(self) -> _Transaction:
        return _Transaction(self.engine)

    @staticmethod
    def _ensure_space(c: Connection, space: str) -> None:
        exists = c.execute(select(schema.spaces.c.name).where(schema.spaces.c.name == space)).first()
        if exists is None:
            row = {"name": space, "version": 0, "draining": "[]", "updated_at": datetime.now(UTC)}
            c.execute(_dialect_insert(c, schema.spaces).values(**row).on_conflict_do_nothing())


class _Transaction:
    """engine.begin() that turns database failures into StoreError (StaleState passes through)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> Connection:
        try:
            self.context = self.engine.begin()
            return self.context.__enter__()
        except SQLAlchemyError as exc:
            raise StoreError(f"state store unavailable: {_reason(exc)}") from exc

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            self.context.__exit__(kind, error, trace)
        except SQLAlchemyError as exc:
            raise StoreError(f"state store write failed: {_reason(exc)}") from exc
        if isinstance(error, SQLAlchemyError):
            raise StoreError(f"state store error: {_reason(error)}") from error


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OperationalError) and exc.orig is not None:
        return str(exc.orig).strip().splitlines()[0]
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
