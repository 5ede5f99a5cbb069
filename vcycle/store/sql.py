"""The SQLAlchemy Core implementation of the state store."""

from __future__ import annotations

import fcntl
import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Row, bindparam, case, delete, func, insert, make_url, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.sql.expression import and_, or_

from vcycle.clock import Clock, utc_now
from vcycle.core.model import Backoff, Cooldown, CycleReport, Heartbeat, LaunchOutcome, MachineRecord, StatusChange
from vcycle.core.states import MachineState
from vcycle.errors import StaleState, StoreError
from vcycle.store import schema
from vcycle.store.engine import check_current, make_engine, migrate, reason, shown, sqlite_path
from vcycle.store.group import Entry, Group
from vcycle.store.points import encode

# Statements run every cycle, built once (building them costs more than running them).
_SPACE: Any = bindparam("space")
_VERSION_OF = select(schema.spaces.c.version, schema.spaces.c.draining).where(schema.spaces.c.name == _SPACE)
_LIVE_MACHINES = select(schema.machines).where(schema.machines.c.space == _SPACE,
                                               schema.machines.c.state != MachineState.GONE.value)
_BACKOFFS_OF = select(schema.backoffs).where(schema.backoffs.c.space == _SPACE)
_COOLDOWNS_OF = select(schema.cooldowns).where(schema.cooldowns.c.space == _SPACE)
_LAUNCHES_OF = select(schema.launches).where(schema.launches.c.space == _SPACE)
_BUMP = update(schema.spaces).where(schema.spaces.c.name == _SPACE,
                                    schema.spaces.c.version == bindparam("expected"))
_BUMP_VERSION = _BUMP.values(version=bindparam("version"), updated_at=bindparam("updated_at"))
_ADD_HISTORY = insert(schema.history)
_NAME = attrgetter("name")
# Housekeeping (vcycle/loop/cycle.py, every few minutes a space): machines gone, accounted and old enough are
# forgotten, with their history, heartbeats and pilot requests; old reports and closed pilot requests too.
_PURGEABLE = select(schema.machines.c.name).where(  # those not yet accounted wait for their accounting
    schema.machines.c.space == bindparam("w_space"), schema.machines.c.state == MachineState.GONE.value,
    schema.machines.c.state_since < bindparam("w_before", type_=schema.UTCDateTime),
    schema.machines.c.accounted_at.is_not(None))
_FORGET = [delete(table).where(table.c.space == bindparam("w_space"),
                               table.c.name.in_(bindparam("w_names", expanding=True)))
           for table in (schema.history, schema.heartbeats, schema.machines, schema.pilot_requests)]
_PURGE_REPORTS = delete(schema.reports).where(schema.reports.c.space == bindparam("w_space"),
                                              schema.reports.c.finished_at < bindparam("w_before",
                                                                                       type_=schema.UTCDateTime))
_PURGE_REQUESTS = delete(schema.pilot_requests).where(  # pilots that ended without a machine
    schema.pilot_requests.c.space == bindparam("w_space"),
    schema.pilot_requests.c.changed_at < bindparam("w_before", type_=schema.UTCDateTime),
    schema.pilot_requests.c.state.in_(("cancelled", "expired")))
_BEATS_OF = select(schema.heartbeats).where(schema.heartbeats.c.space == _SPACE)
_BEATS_SINCE = _BEATS_OF.where(schema.heartbeats.c.written_at >= bindparam("since", type_=schema.UTCDateTime))

# Heartbeats written by other processes with clocks this far behind are still read.
HEARTBEAT_SKEW = timedelta(seconds=30)
# A round's read ahead (Store.glance): spaces' versions, and their heartbeats since each one's own time
_VERSIONS_OF = select(schema.spaces.c.name, schema.spaces.c.version).where(
    schema.spaces.c.name.in_(bindparam("spaces", expanding=True)))
GLANCE_CHUNK = 200  # spaces per statement of heartbeats (two parameters each)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # the "since" of a space whose machines never beat yet


def _read_from(known: tuple[dict[str, Heartbeat], datetime | None] | None) -> datetime | None:
    """Where a space's next read of heartbeats starts: the newest it read, less the skew (None: all of them)."""
    since = known[1] if known is not None else None
    return since - HEARTBEAT_SKEW if since is not None else None


@functools.cache
def _beats_of_spaces(count: int) -> Any:
    """The heartbeats of ``count`` spaces, each written since its own time: (space s0, since t0), ..."""
    hb = schema.heartbeats
    return select(hb).where(or_(*(and_(hb.c.space == bindparam(f"s{i}"),
                                       hb.c.written_at >= bindparam(f"t{i}", type_=schema.UTCDateTime))
                                  for i in range(count))))
T = TypeVar("T")
STORE_PATIENCE_SECONDS = 120.0  # how long a daemon waits at start for a database server that does not answer

# More work for the transaction of a write, handed in by whoever knows it (a named-machine source's claims).
Step = Callable[[Connection], None]


class Fence(Protocol):
    """Who may write for a space (the leases of managers sharing a store, vcycle/loop/leases.py)."""

    def check(self, connection: Connection, space: str) -> None:
        """Raise Fenced unless this manager holds ``space`` now, inside the write's transaction."""


@dataclass(frozen=True, slots=True)
class _Glance:
    """What Store.glance read ahead for one space's next look."""

    version: int
    known: tuple[dict[str, Heartbeat], datetime | None]  # the heartbeats known when it was read
    rows: Sequence[Row[Any]]  # the heartbeats written since
    also: Callable[[Connection], Any] | None
    found: Any


@dataclass(frozen=True, slots=True)
class SpaceState:
    """One space as read: its version, live records (not GONE), backoffs and drains."""

    space: str
    version: int
    records: tuple[MachineRecord, ...]
    backoffs: Mapping[str, Backoff] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()
    cooldowns: Mapping[tuple[str, str], Cooldown] = field(default_factory=dict)  # (machinetype, offering) -> last
    launches: Mapping[str, tuple[LaunchOutcome, ...]] = field(default_factory=dict)  # machinetype -> newest last


def _outcomes(machinetype: str, text: str) -> tuple[LaunchOutcome, ...]:
    """A machinetype's launch outcomes as stored: [machine, ISO time, ok, reason] each, newest last."""
    return tuple(LaunchOutcome(machinetype, machine, datetime.fromisoformat(at), bool(ok), reason)
                 for machine, at, ok, reason in json.loads(text))


def _dialect_insert(connection: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(connection: Connection, table: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE of every non-key column; the statement is built once per table."""
    if not rows:
        return
    cache_key = (connection.dialect.name, table.name)
    statement = _UPSERTS.get(cache_key)
    if statement is None:
        insert_ = _dialect_insert(connection, table)
        updates = {c.name: insert_.excluded[c.name] for c in table.columns if c.name not in keys}
        statement = _UPSERTS[cache_key] = insert_.on_conflict_do_update(index_elements=list(keys), set_=updates)
    connection.execute(statement, list(rows))


def _insert_new(connection: Connection, table: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING."""
    connection.execute(_dialect_insert(connection, table).on_conflict_do_nothing(index_elements=list(keys)),
                       list(rows))


_MERGES: dict[str, Any] = {}


# Each heartbeat value with the time it was said: of two endpoints writing one
# machine's heartbeat, the value said later wins whichever is written last.
_SAID_AT = {"at": "at", "address": "at", "detail": "at", "shutdown_message": "shutdown_message_at",
            "shutdown_message_at": "shutdown_message_at", "interruption": "interruption_at",
            "interruption_at": "interruption_at"}


def _merge_heartbeats(connection: Connection) -> Any:
    """The heartbeat upsert: newer values win, None keeps the stored one, an older one never replaces a newer."""
    statement = _MERGES.get(connection.dialect.name)
    if statement is None:
        table = schema.heartbeats
        insert_ = _dialect_insert(connection, table)
        updates: dict[str, Any] = {}
        for name, said in _SAID_AT.items():
            new, old = insert_.excluded[said], table.c[said]
            stale = old.is_not(None) & new.is_not(None) & (new < old)
            updates[name] = case((stale, table.c[name]), else_=func.coalesce(insert_.excluded[name], table.c[name]))
        updates["written_at"] = insert_.excluded.written_at
        statement = _MERGES[connection.dialect.name] = insert_.on_conflict_do_update(
            index_elements=["space", "name"], set_=updates)
    return statement


def _row(space: str, record: MachineRecord) -> dict[str, Any]:
    last = record.last or StatusChange(record.state, record.created_at, "")
    return {
        "space": space, "name": record.name, "machinetype": record.machinetype, "state": record.state.value,
        "state_since": last.at, "state_reason": last.reason, "state_cause": last.cause, "processors": record.processors,
        "created_at": record.created_at, "request_id": record.request_id, "manager": record.manager,
        "cloud_id": record.cloud_id, "zone": record.zone, "flavor": record.flavor, "capacity": record.capacity,
        "hs06": record.hs06,
        "started_at": record.started_at, "stopped_at": record.stopped_at, "shutdown_at": record.shutdown_at,
        "heartbeat_at": record.heartbeat_at, "shutdown_code": record.shutdown_code,
        "shutdown_text": record.shutdown_text, "delete_attempts": record.delete_attempts,
        "last_delete_at": record.last_delete_at, "delete_requested": record.delete_requested,
        "token_hash": record.token_hash, "features": record.features, "registered_at": record.registered_at,
        "idle_since": record.idle_since, "accounted_at": record.accounted_at, "made_by": record.made_by,
        "interruption": record.interruption, "interrupted_at": record.interrupted_at,
    }


def _shared(value: str | None) -> str | None:
    """One string object for the many equal ones rows repeat (a space's name, its machinetypes', reasons): a
    store holding 200,000 records keeps each once."""
    return None if value is None else sys.intern(value)


def _record(row: Any) -> MachineRecord:
    state = MachineState(row.state)
    return MachineRecord(
        name=row.name, space=sys.intern(row.space), machinetype=sys.intern(row.machinetype), state=state,
        processors=row.processors, created_at=row.created_at, request_id=row.request_id,
        manager=sys.intern(row.manager), cloud_id=row.cloud_id, zone=_shared(row.zone), flavor=_shared(row.flavor),
        capacity=_shared(row.capacity), hs06=row.hs06, started_at=row.started_at,
        stopped_at=row.stopped_at,
        shutdown_at=row.shutdown_at, heartbeat_at=row.heartbeat_at, shutdown_code=row.shutdown_code,
        shutdown_text=row.shutdown_text, delete_attempts=row.delete_attempts, last_delete_at=row.last_delete_at,
        delete_requested=row.delete_requested, token_hash=row.token_hash, features=row.features,
        registered_at=row.registered_at, idle_since=row.idle_since, accounted_at=row.accounted_at,
        made_by=_shared(row.made_by), interruption=row.interruption, interrupted_at=row.interrupted_at,
        last=StatusChange(state, row.state_since, sys.intern(row.state_reason), sys.intern(row.state_cause)),
    )


@dataclass(frozen=True)
class _Write:
    """One write's arguments (Store.write), as it waits for its transaction."""

    space: str
    version: int  # the version its changes were read at
    records: list[MachineRecord]
    history: list[tuple[str, StatusChange]]
    backoffs: Mapping[str, Backoff] | None
    draining: frozenset[str] | None
    steps: tuple[Step, ...]
    cooldowns: list[Cooldown]
    launches: Mapping[str, tuple[LaunchOutcome, ...]] | None


def _rows(w: _Write) -> int:
    """The rows a write adds or changes, roughly: a group's transaction is kept to Group.rows of them."""
    return 1 + len(w.records) + len(w.history)


class Store:
    """A migrated database holding vcycle's state; safe to share between threads.

    A store opened ``readonly`` reads only: spaces it does not know read as empty, and a write is a
    StoreError."""

    def __init__(self, engine: Engine, url: str = "", readonly: bool = False) -> None:
        self.engine = engine
        self.url = url
        self.readonly = readonly
        self._cache: dict[str, SpaceState] = {}
        self._known_spaces: set[str] = set()
        path = sqlite_path(engine.url) if not readonly else None
        self._write_lock = _WriteLock(path) if engine.dialect.name == "sqlite" else None
        # An SQLite database in memory (a simulation's) is one connection: it is kept, and its transactions, the
        # reads too, take turns on it under the write lock.
        self._shared = engine.connect() if self._write_lock is not None and path is None and not readonly else None
        self._beats: dict[str, tuple[dict[str, Heartbeat], datetime | None]] = {}
        self._glanced: dict[str, _Glance] = {}  # read ahead for each space's next look (Store.glance)
        self.clock: Clock = utc_now  # when a heartbeat is written (a simulation sets its own)
        self.fence: Fence | None = None  # set where managers share the store: a space's writes need its lease
        self._writes: Group[_Write] = Group(size=_rows)  # writes made at the same moment share a transaction

    @classmethod
    def open(cls, url: str, *, readonly: bool = False) -> Store:
        """Open (and migrate, unless ``readonly``) the store at ``url``; StoreError if it cannot be used."""
        engine = make_engine(url, readonly=readonly)
        try:
            check_current(engine) if readonly else migrate(engine)
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreError(f"cannot open the state store {shown(url)}: {reason(exc, url)}") from exc
        except StoreError:
            engine.dispose()
            raise
        return cls(engine, url, readonly)

    @classmethod
    def open_waiting(cls, url: str, *, patience: float = STORE_PATIENCE_SECONDS,
                     sleep: Callable[[float], None] = time.sleep,
                     say: Callable[[str], None] | None = None) -> Store:
        """Open the store as ``open`` does, waiting for a database server that does not answer yet (starting,
        restarting) up to ``patience`` seconds, each try said through ``say``; other errors at once."""
        waited, pause = 0.0, 1.0
        while True:
            try:
                return cls.open(url)
            except StoreError as exc:
                unreachable = (isinstance(exc.__cause__, OperationalError)
                               and make_url(url).get_backend_name() != "sqlite")
                if not unreachable or waited + pause > patience:
                    raise
                if say is not None:
                    say(f"{exc}; trying again in {pause:g}s")
                sleep(pause)
                waited += pause
                pause = min(2 * pause, 15.0)

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
        self.engine.dispose()

    # --- one space, versioned -----------------------------------------------------------

    def load(self, space: str) -> SpaceState:
        """The space's live records (every state but GONE), backoffs and version.

        What this Store last read or wrote is kept in memory; while the version
        in the database is unchanged (no other writer), only the version is read.
        """
        with self._begin(write=space not in self._known_spaces and not self.readonly) as c:
            state = self._load(c, space)
        self._known(space)
        return state

    def look(self, space: str, also: Callable[[Connection], T] | None = None
             ) -> tuple[SpaceState, Mapping[str, Heartbeat], T | None]:
        """``load(space)``, ``heartbeats(space)`` and ``also`` (another read, where given) in one transaction:
        what a cycle reads before it lists the cloud (a steady space's few small queries, with one begin and one
        commit), or nothing where a round's glance read it ahead (``glance``)."""
        known = self._beats.get(space)
        glanced = self._glanced.pop(space, None)
        cached = self._cache.get(space)
        if glanced is not None and cached is not None and glanced.version == cached.version and \
                glanced.known is known and (also is None or also is glanced.also):
            return cached, self._heard(space, known, glanced.rows), glanced.found if also is not None else None
        with self._begin(write=space not in self._known_spaces and not self.readonly) as c:
            state = self._load(c, space)
            rows = self._beat_rows(c, space, known)
            found = also(c) if also is not None else None
        self._known(space)
        return state, self._heard(space, known, rows), found

    def glance(self, spaces: Iterable[str], also: Callable[[Connection], Any] | None = None) -> None:
        """Read ahead, for a round of cycles about to start, what the next ``look`` of each of ``spaces`` reads:
        its version and the heartbeats written since its last read, and ``also`` once for all, in one
        transaction (a steady space then reads nothing of its own). A look uses it only while nothing changed
        under it: the space's records as cached, its heartbeats as known then and the same ``also``; otherwise,
        and for a space not read before, the look reads as ever. Each glance replaces the last."""
        ready = [s for s in dict.fromkeys(spaces) if s in self._known_spaces and s in self._cache and s in self._beats]
        self._glanced = {}
        if not ready or self.readonly:
            return
        known = {s: self._beats[s] for s in ready}
        rows: dict[str, list[Row[Any]]] = {s: [] for s in ready}
        with self._begin() as c:
            versions: dict[str, int] = {name: version for name, version in c.execute(_VERSIONS_OF, {"spaces": ready})}
            for start in range(0, len(ready), GLANCE_CHUNK):
                chunk = ready[start:start + GLANCE_CHUNK]
                since: dict[str, object] = {}
                for i, s in enumerate(chunk):
                    since[f"s{i}"], since[f"t{i}"] = s, _read_from(known[s]) or _NEVER
                for row in c.execute(_beats_of_spaces(len(chunk)), since):
                    rows[row.space].append(row)
            found = also(c) if also is not None else None
        self._glanced = {s: _Glance(versions[s], known[s], rows[s], also, found) for s in ready if s in versions}

    def _load(self, c: Connection, space: str) -> SpaceState:
        if self.readonly:
            found = c.execute(_VERSION_OF, {"space": space}).one_or_none()
            if found is None:
                return SpaceState(space, 0, ())
            version, draining = found
        else:
            self._ensure_space(c, space)
            version, draining = c.execute(_VERSION_OF, {"space": space}).one()
        cached = self._cache.get(space)
        if cached is not None and cached.version == version:
            return cached
        rows = c.execute(_LIVE_MACHINES, {"space": space}).all()
        backoffs = {r.machinetype: Backoff(r.machinetype, r.last_abort_at, r.reason, r.failures)
                    for r in c.execute(_BACKOFFS_OF, {"space": space})}
        cooldowns = {(r.machinetype, r.offering): Cooldown(r.machinetype, r.offering, r.since, r.reason, r.failures)
                     for r in c.execute(_COOLDOWNS_OF, {"space": space})}
        launches = {r.machinetype: _outcomes(r.machinetype, r.outcomes)
                    for r in c.execute(_LAUNCHES_OF, {"space": space})}
        state = SpaceState(space, version, tuple(_record(r) for r in rows), backoffs, frozenset(json.loads(draining)),
                           cooldowns, launches)
        self._cache[space] = state
        return state

    def write(self, space: str, version: int, records: Iterable[MachineRecord] = (),
              history: Iterable[tuple[str, StatusChange]] = (), backoffs: Mapping[str, Backoff] | None = None,
              draining: frozenset[str] | None = None, steps: Sequence[Step] = (),
              cooldowns: Iterable[Cooldown] = (),
              launches: Mapping[str, tuple[LaunchOutcome, ...]] | None = None) -> int:
        """Commit changes read at ``version`` atomically; the new version. Raises StaleState.

        ``steps`` run in the same transaction (a source's claim of the requests these records fulfil), so
        that the changes and the steps are kept together or not at all. Writes of other spaces made at the
        same moment (other threads) may share the transaction (vcycle/store/group.py); each is still kept
        or refused as a whole, and one refused leaves the others as they would be alone."""
        request = _Write(space, version, list(records), list(history), backoffs, draining, tuple(steps),
                         list(cooldowns), launches)
        return self._writes.run(request, self._commit)

    def _commit(self, take: Callable[[], list[Entry[_Write]]]) -> None:
        """One transaction for the writes queued together (Group.run's ``commit``), their statements made once
        for all of them. Should it fail (one of them stale, fenced or failing its step), nothing of it is kept,
        and each write is made again on its own, so that each meets its own outcome."""
        group: list[Entry[_Write]] = []
        try:
            with self._begin(write=True) as c:
                group = take()
                for entry, version in zip(group, self._apply(c, [e.request for e in group]), strict=True):
                    entry.version = version
        except Exception:
            if len(group) < 2:
                raise  # a write alone: its own error, as it always was
            for entry in group:  # each alone, through this very path
                entry.version = None
                try:
                    self._commit(functools.partial(list, (entry,)))
                except Exception as exc:  # noqa: BLE001 - each write's own outcome, raised in its own thread
                    entry.error = exc
            return
        for entry in group:
            self._remember(entry.request)

    def _apply(self, c: Connection, writes: Sequence[_Write]) -> list[int]:
        """The writes' statements in transaction ``c``, each kind made once for all of them; their new versions.
        StaleState (or Fenced) before any change, where one of them was read at a version that is gone."""
        for w in writes:
            if self.fence is not None:
                self.fence.check(c, w.space)
            self._ensure_space(c, w.space)
        now = datetime.now(UTC)
        bumps = [{"space": w.space, "expected": w.version, "version": w.version + 1, "updated_at": now}
                 for w in writes if w.draining is None]
        if bumps:
            done = c.execute(_BUMP_VERSION, bumps if len(bumps) > 1 else bumps[0])
            if done.rowcount != len(bumps):
                raise StaleState(f"space {writes[0].space}: another writer committed after version "
                                 f"{writes[0].version}" if len(writes) == 1 else
                                 "one of the spaces written together was written by another writer since")
        for w in writes:
            if w.draining is not None:
                values = {"version": w.version + 1, "updated_at": now, "draining": json.dumps(sorted(w.draining))}
                if c.execute(_BUMP.values(**values), {"space": w.space, "expected": w.version}).rowcount != 1:
                    raise StaleState(f"space {w.space}: another writer committed after version {w.version}")
        _upsert(c, schema.machines, [_row(w.space, r) for w in writes for r in w.records], ("space", "name"))
        entries = [{"space": w.space, "name": n, "state": h.state.value, "at": h.at, "reason": h.reason,
                    "cause": h.cause} for w in writes for n, h in w.history]
        if entries:
            c.execute(_ADD_HISTORY, entries)
        for w in writes:
            for step in w.steps:
                step(c)
        _upsert(c, schema.backoffs, [{"space": w.space, "machinetype": b.machinetype,
                                      "last_abort_at": b.last_abort_at, "reason": b.reason, "failures": b.failures}
                                     for w in writes if w.backoffs for b in w.backoffs.values()],
                ("space", "machinetype"))
        _upsert(c, schema.cooldowns, [{"space": w.space, "machinetype": d.machinetype, "offering": d.offering,
                                       "since": d.since, "reason": d.reason, "failures": d.failures}
                                      for w in writes for d in w.cooldowns],
                ("space", "machinetype", "offering"))
        _upsert(c, schema.launches, [{"space": w.space, "machinetype": name, "outcomes": json.dumps(
            [[o.machine, o.at.isoformat(), o.ok, o.reason] for o in kept])}
            for w in writes if w.launches for name, kept in w.launches.items()], ("space", "machinetype"))
        return [w.version + 1 for w in writes]

    def update(self, space: str, change: Callable[[SpaceState], dict[str, Any] | None], tries: int = 10) -> None:
        """A read-modify-write of one space: ``change(state)`` gives ``write``'s arguments (None: nothing to
        write), retried when another writer got there first. StaleState after ``tries`` attempts."""
        for attempt in range(tries):
            state = self.load(space)
            wanted = change(state)
            if wanted is None:
                return
            try:
                self.write(space, state.version, **wanted)
                return
            except StaleState:
                if attempt + 1 == tries:
                    raise
                time.sleep(0.2)

    def _remember(self, w: _Write) -> None:
        """Keep the cache true after our own write (or drop it if it was not current)."""
        self._known(w.space)
        cached = self._cache.pop(w.space, None)
        if cached is None or cached.version != w.version:
            return
        merged = dict(zip(map(_NAME, cached.records), cached.records, strict=True))  # built in C: the cycle's own
        for record in w.records:
            if record.state is MachineState.GONE:
                merged.pop(record.name, None)
            else:
                merged[record.name] = record
        self._cache[w.space] = SpaceState(w.space, w.version + 1, tuple(merged.values()),
                                          {**cached.backoffs, **(w.backoffs or {})},
                                          cached.draining if w.draining is None else frozenset(w.draining),
                                          {**cached.cooldowns,
                                           **{(d.machinetype, d.offering): d for d in w.cooldowns}},
                                          {**cached.launches, **(w.launches or {})})

    # --- unversioned: machine signals and reports ----------------------------------------

    def heartbeats(self, space: str) -> Mapping[str, Heartbeat]:
        """Every machine's latest heartbeat; after the first call only what changed is read. While nothing
        changed, the very mapping of the last call is handed out again, with the very same heartbeats (an
        incremental sync tells what changed by that); it is never changed afterwards, and nor may the caller."""
        known = self._beats.get(space)
        with self._begin() as c:
            rows = self._beat_rows(c, space, known)
        return self._heard(space, known, rows)

    @staticmethod
    def _beat_rows(c: Connection, space: str, known: tuple[dict[str, Heartbeat], datetime | None] | None
                   ) -> Sequence[Row[Any]]:
        since = _read_from(known)
        if since is None:
            return c.execute(_BEATS_OF, {"space": space}).all()
        return c.execute(_BEATS_SINCE, {"space": space, "since": since}).all()

    def _heard(self, space: str, known: tuple[dict[str, Heartbeat], datetime | None] | None,
               rows: Sequence[Row[Any]]) -> Mapping[str, Heartbeat]:
        """The heartbeats ``known`` before with the ``rows`` read since, kept for the next read."""
        seen, since = known or ({}, None)
        beats: dict[str, Heartbeat] | None = None
        for r in rows:
            beat = Heartbeat(r.name, r.at, r.shutdown_message, r.shutdown_message_at, r.address, r.detail,
                             r.interruption, r.interruption_at)
            since = r.written_at if since is None or r.written_at > since else since
            if seen.get(r.name) != beat:  # read again within the skew, unchanged: the same object stays
                if beats is None:
                    beats = dict(seen)
                beats[r.name] = beat
        if beats is None:
            beats = seen
        self._beats[space] = (beats, since)
        return beats

    def put_heartbeats(self, items: Iterable[tuple[str, Heartbeat]]) -> None:
        """Record heartbeats and shutdown messages in one batch.

        A value left None keeps what the store has: a heartbeat without a
        shutdown message does not erase an earlier message.
        """
        now = self.clock()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for space, beat in items:
            row = {"space": space, "name": beat.machine, "at": beat.at, "shutdown_message": beat.shutdown_message,
                   "shutdown_message_at": beat.shutdown_message_at, "address": beat.address, "detail": beat.detail,
                   "interruption": beat.interruption, "interruption_at": beat.interruption_at, "written_at": now}
            earlier = rows.get((space, beat.machine))
            if earlier is not None:
                row = {**earlier, **{k: v for k, v in row.items() if v is not None}}
            rows[(space, beat.machine)] = row
        if not rows:
            return
        with self._begin(write=True) as c:
            if c.dialect.name == "postgresql":  # the database's clock: endpoints on several hosts agree on it
                written = c.execute(select(func.clock_timestamp())).scalar_one()
                for row in rows.values():
                    row["written_at"] = written
            c.execute(_merge_heartbeats(c), list(rows.values()))

    def add_report(self, report: CycleReport) -> None:
        self.add_reports([report])

    def add_reports(self, reports: Sequence[CycleReport]) -> None:
        """Keep cycle reports, all in one transaction."""
        rows = [{"space": r.space, "started_at": r.started_at, "finished_at": r.finished_at, "ok": r.ok,
                 "summary": json.dumps(r.summary())} for r in reports]
        points = [{"space": r.space, "at": r.started_at, "data": encode(r.series)}
                  for r in reports if r.series]
        if rows:
            with self._begin(write=True) as c:
                c.execute(insert(schema.reports), rows)
                if points:  # a cycle that starts in the same microsecond as another of its space adds no point
                    _insert_new(c, schema.series, points, ("space", "at"))

    def last_reports(self) -> dict[str, dict[str, Any]]:
        """The newest cycle report of every space, as dicts."""
        with self._begin() as c:
            newest = select(func.max(schema.reports.c.id)).group_by(schema.reports.c.space)
            rows = c.execute(select(schema.reports).where(schema.reports.c.id.in_(newest))).all()
        return {r.space: {"started_at": r.started_at.isoformat(), "finished_at": r.finished_at.isoformat(),
                          "ok": r.ok, **json.loads(r.summary)} for r in rows}

    # --- reading for people -------------------------------------------------------------

    def launch_outcomes(self) -> dict[str, dict[str, tuple[LaunchOutcome, ...]]]:
        """space -> machinetype -> its last launch outcomes, newest last (one small table)."""
        with self._begin() as c:
            rows = c.execute(select(schema.launches)).all()
        found: dict[str, dict[str, tuple[LaunchOutcome, ...]]] = {}
        for r in rows:
            found.setdefault(r.space, {})[r.machinetype] = _outcomes(r.machinetype, r.outcomes)
        return found

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

    def records(self, space: str) -> list[MachineRecord]:
        """Every record of a space, GONE ones included (until purged)."""
        with self._begin() as c:
            rows = c.execute(select(schema.machines).where(schema.machines.c.space == space)
                             .order_by(schema.machines.c.created_at)).all()
        return [_record(r) for r in rows]

    def interruptions(self, space: str, since: datetime) -> dict[str, tuple[int, int]]:
        """machinetype -> (interrupted since ``since``, machines that ran since then), GONE ones included: what
        core/interruptions.tally counts of records, for max_interruption_fraction."""
        m = schema.machines
        hit = func.sum(case((m.c.interrupted_at >= since, 1), else_=0))
        query = (select(m.c.machinetype, hit, func.count())
                 .where(m.c.space == space, (m.c.started_at.is_not(None)) | (m.c.interrupted_at.is_not(None)),
                        (m.c.stopped_at.is_(None)) | (m.c.stopped_at >= since))
                 .group_by(m.c.machinetype))
        with self._begin() as c:
            return {mt: (int(hits or 0), int(n)) for mt, hits, n in c.execute(query).all()}

    def history(self, space: str, name: str) -> list[StatusChange]:
        with self._begin() as c:
            rows = c.execute(select(schema.history).where(schema.history.c.space == space,
                                                          schema.history.c.name == name)
                             .order_by(schema.history.c.id)).all()
        return [StatusChange(MachineState(r.state), r.at, r.reason, r.cause) for r in rows]

    def purge(self, space: str, before: datetime) -> int:
        """Forget machines GONE before ``before`` and accounted, their history, heartbeats and pilot requests; how
        many."""
        with self._begin(write=True) as c:
            if self.fence is not None:
                self.fence.check(c, space)
            at = {"w_space": space, "w_before": before}
            names = c.execute(_PURGEABLE, at).scalars().all()
            if names:
                beats = self._beats.get(space)
                if beats is not None:  # handed-out heartbeat mappings are never changed: a new one without them
                    forgotten = set(names)
                    self._beats[space] = ({n: b for n, b in beats[0].items() if n not in forgotten}, beats[1])
                for forget in _FORGET:
                    c.execute(forget, {"w_space": space, "w_names": names})
            c.execute(_PURGE_REPORTS, at)
            c.execute(_PURGE_REQUESTS, at)
        return len(names)

    # --- machinery ----------------------------------------------------------------

    def _begin(self, write: bool = False) -> _Transaction:
        """A transaction; on SQLite, writers queue here rather than in SQLite's sleeping busy handler."""
        if write and self.readonly:
            raise StoreError(f"the state store {shown(self.url)} was opened read-only")
        if self._shared is not None:
            return _Transaction(self.engine, self._write_lock, self.url, self._shared)
        return _Transaction(self.engine, self._write_lock if write else None, self.url)

    def _ensure_space(self, c: Connection, space: str) -> None:
        """The space's row, made in transaction ``c`` unless known to be there (``_known``)."""
        if space in self._known_spaces:
            return
        row = {"name": space, "version": 0, "draining": "[]", "updated_at": datetime.now(UTC)}
        c.execute(_dialect_insert(c, schema.spaces).values(**row).on_conflict_do_nothing())

    def _known(self, space: str) -> None:
        """The space's row is committed: it need not be made again. Said only once the transaction that read or
        made it has committed, so that no other thread reads it as there before it is."""
        if not self.readonly:
            self._known_spaces.add(space)


class _WriteLock:
    """One SQLite writer at a time: a thread lock, and a file lock against other processes."""

    def __init__(self, database: str | None) -> None:
        self.threads = threading.Lock()
        self.path = f"{database}.writelock" if database and database != ":memory:" else None
        self.file: Any = None

    def acquire(self) -> None:
        self.threads.acquire()
        if self.path is not None:
            try:
                if self.file is None:
                    self.file = open(self.path, "a")  # kept open for the life of the store
                fcntl.flock(self.file, fcntl.LOCK_EX)
            except OSError:
                self.threads.release()
                raise

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        self.threads.release()


class _Transaction:
    """engine.begin() that turns database failures into StoreError (StaleState passes through)."""

    def __init__(self, engine: Engine, lock: _WriteLock | None, url: str, shared: Connection | None = None) -> None:
        self.engine = engine
        self.lock = lock
        self.url = url
        self.shared = shared  # the one connection of a database in memory, else a connection per transaction

    def __enter__(self) -> Connection:
        if self.lock is not None:
            try:
                self.lock.acquire()
            except OSError as exc:
                path, self.lock = self.lock.path, None
                raise StoreError(f"cannot lock the state store with {path}: {exc.strerror}") from exc
        try:
            self.context: AbstractContextManager[Any]
            if self.shared is not None:
                self.context = self.shared.begin()
                self.context.__enter__()
                return self.shared
            self.context = self.engine.begin()
            connection: Connection = self.context.__enter__()
            return connection
        except SQLAlchemyError as exc:
            self._release()
            raise StoreError(f"state store unavailable: {reason(exc, self.url)}") from exc

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            self.context.__exit__(kind, error, trace)
        except SQLAlchemyError as exc:
            raise StoreError(f"state store write failed: {reason(exc, self.url)}") from exc
        finally:
            self._release()
        if isinstance(error, SQLAlchemyError):
            raise StoreError(f"state store error: {reason(error, self.url)}") from error

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
