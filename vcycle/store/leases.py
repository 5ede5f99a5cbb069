"""Leases in the store: which manager holds each space, under which epoch, until when (vcycle/core/leases.py).

Every statement reads the time from the database itself (PostgreSQL's
``clock_timestamp()``), so managers on hosts whose clocks disagree still agree
on whether a lease has expired; a test may hand in its own clock instead. A
claim is one conditional UPDATE (or INSERT) that succeeds only when the lease
is free or expired, and raises the epoch; the fencing check of a write
(``verify``) locks the lease row for the rest of the write's transaction on
PostgreSQL (FOR SHARE), so a claim by another manager waits for the write and
cannot slip between the check and the commit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import URL, Connection, Float, cast, delete, func, insert, literal, select, update

from vcycle.core.leases import RELEASED, Lease
from vcycle.store import schema
from vcycle.store.sql import Store, _dialect_insert

L = schema.leases
CHANNEL = "vcycle_leases"  # PostgreSQL's NOTIFY channel: a manager gave leases up, the others look at once


def _database_now(c: Connection) -> Any:
    """The database's clock in seconds since the epoch, as an SQL expression."""
    if c.dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0


def _lease(row: Any) -> Lease:
    return Lease(row.space, row.holder, row.epoch, row.since, row.expires, row.reason)


class LeaseTable:
    """The leases and managers tables of one store, for manager ``holder``."""

    def __init__(self, store: Store, holder: str, seconds: float, clock: Callable[[], float] | None = None,
                 alive_seconds: float | None = None) -> None:
        self.store = store
        self.holder = holder
        self.seconds = seconds
        self.alive_seconds = seconds if alive_seconds is None else alive_seconds  # a manager silent this long: gone
        self.clock = clock  # a test's clock; None: the database's

    def _now(self, c: Connection) -> float:
        if self.clock is not None:
            return self.clock()
        return float(c.execute(select(_database_now(c))).scalar_one())

    def look(self, beat: bool = False) -> tuple[float, dict[str, Lease], list[str]]:
        """(now, every lease, the managers alive) in one transaction; ``beat``: say first that this one is alive."""
        with self.store._begin(write=beat) as c:
            now = self._now(c)
            if beat:
                self._beat(c, now)
            leases = {r.space: _lease(r) for r in c.execute(select(L))}
            live = [r.holder for r in c.execute(select(schema.managers.c.holder).where(
                schema.managers.c.expires > now))]
        return now, leases, live

    def beat(self) -> float:
        """Say this manager is alive for another ``alive_seconds``; the database's time now."""
        with self.store._begin(write=True) as c:
            now = self._now(c)
            self._beat(c, now)
        return now

    def _beat(self, c: Connection, now: float) -> None:
        table = schema.managers
        done = c.execute(update(table).where(table.c.holder == self.holder).values(expires=now + self.alive_seconds))
        if done.rowcount == 0:
            c.execute(insert(table).values(holder=self.holder, started=now, expires=now + self.alive_seconds))

    def claim(self, wanted: Mapping[str, str]) -> dict[str, Lease]:
        """The leases of the spaces in ``wanted`` (space -> why) that are free, for this manager under new epochs,
        in one transaction; a space another holds is left out. Each claim is a conditional INSERT or UPDATE, so
        two managers claiming one space at once cannot both get it."""
        if not wanted:
            return {}
        got: dict[str, Lease] = {}
        with self.store._begin(write=True) as c:
            now = self._now(c)
            found = {r.space: r for r in c.execute(select(L).where(L.c.space.in_(list(wanted))))}
            noted: list[dict[str, Any]] = []
            for space, why in wanted.items():
                values = {"holder": self.holder, "since": now, "expires": now + self.seconds, "reason": why}
                row = found.get(space)
                if row is None:
                    inserted = c.execute(_dialect_insert(c, L).on_conflict_do_nothing(index_elements=["space"])
                                         .returning(L.c.epoch), {"space": space, "epoch": 1, **values})
                    if inserted.first() is None:  # another manager's claim got there first
                        continue
                    epoch, previous, lapsed = 1, "", False
                else:
                    if row.expires > now:
                        continue
                    done = c.execute(update(L).where(L.c.space == space, L.c.epoch == row.epoch, L.c.expires <= now)
                                     .values(epoch=row.epoch + 1, **values))
                    if done.rowcount != 1:
                        continue
                    epoch, previous = row.epoch + 1, row.holder
                    lapsed = not row.reason.startswith(RELEASED) and row.holder != self.holder
                noted.append({"space": space, "epoch": epoch, "holder": self.holder, "previous": previous,
                              "taken_over": lapsed, "at": now})
                got[space] = Lease(space, self.holder, epoch, now, now + self.seconds, why)
            if noted:
                c.execute(insert(schema.lease_changes), noted)
        return got

    def renew(self, beat: bool = True) -> tuple[float, dict[str, Lease]]:
        """Renew every live lease this manager holds, and say it is alive unless told not to (``beat``: a manager
        that is leaving renews the spaces it still cycles, but must not come back among the managers alive, or the
        others would hand it spaces it will never claim): (the database's time, the leases held). A lease that has
        expired is not renewed (it may be claimed again, under a new epoch)."""
        with self.store._begin(write=True) as c:
            now = self._now(c)
            c.execute(update(L).where(L.c.holder == self.holder, L.c.expires > now).values(expires=now + self.seconds))
            if beat:
                self._beat(c, now)
            held = {r.space: _lease(r) for r in c.execute(select(L).where(L.c.holder == self.holder,
                                                                          L.c.expires > now))}
        return now, held

    def release(self, given: Mapping[str, str], *, leave: bool = False) -> None:
        """Give the leases of ``given`` (space -> why) up now, in one transaction (their epochs stay, for the next
        holder to raise); ``leave``: leave the managers alive too, so that the others hear once and spread the
        spaces without this one."""
        if not given and not leave:
            return
        said: dict[str, list[str]] = {}
        for space, why in given.items():
            said.setdefault(why, []).append(space)
        with self.store._begin(write=True) as c:
            if said:
                now = self._now(c)
            for why, spaces in said.items():  # one statement for the spaces given up for one reason
                c.execute(update(L).where(L.c.holder == self.holder, L.c.space.in_(spaces), L.c.expires > now)
                          .values(expires=now, reason=f"{RELEASED} {why}"))
            if leave:
                c.execute(delete(schema.managers).where(schema.managers.c.holder == self.holder))
            _notify(c, self.holder)

    def verify(self, c: Connection, space: str, epoch: int) -> bool:
        """Whether this manager holds ``space`` under ``epoch`` now, inside the transaction ``c`` (whose lease
        row stays locked against claims until it commits, on PostgreSQL)."""
        now = literal(self.clock()) if self.clock is not None else _database_now(c)
        query = select(L.c.epoch).where(L.c.space == space, L.c.holder == self.holder, L.c.epoch == epoch,
                                        L.c.expires > now)
        if c.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        return c.execute(query).first() is not None


def _notify(c: Connection, holder: str) -> None:
    """Tell the other managers, when this transaction commits, that ``holder`` gave something up (PostgreSQL)."""
    if c.dialect.name == "postgresql":
        c.execute(select(func.pg_notify(CHANNEL, holder)))


class Listener:
    """Wakes a manager as soon as another one gives leases up (PostgreSQL's LISTEN), so that a space handed on
    is claimed at once rather than at the next round. On its own connection; a broken one is opened again. Where
    it cannot listen (SQLite, the database down), ``wait`` only waits: the rounds still find every change."""

    def __init__(self, store: Store, holder: str) -> None:
        self.url = store.engine.url
        self.holder = holder
        self.connection: Any = None

    def wait(self, timeout: float) -> bool:
        """Whether another manager gave leases up within ``timeout`` seconds."""
        if self.url.get_backend_name() != "postgresql":
            time.sleep(timeout)
            return False
        import psycopg  # the PostgreSQL extra's driver, there whenever such a store is

        try:
            if self.connection is None:
                self.connection = _listening(self.url)
            return any(n.payload != self.holder for n in self.connection.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error:
            self.close()
            time.sleep(timeout)
            return False

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing more to do with it
                connection.close()


def _listening(url: URL) -> Any:
    import psycopg

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
    connection.execute(f"LISTEN {CHANNEL}")
    return connection


def changes(store: Store, since: float) -> list[dict[str, Any]]:
    """The leases that changed hands since ``since`` (database seconds), oldest first."""
    table = schema.lease_changes
    with store._begin() as c:
        return [dict(r._mapping) for r in c.execute(select(table).where(table.c.at >= since).order_by(table.c.at))]


def status(store: Store) -> tuple[float, list[Lease], list[tuple[str, float, float]], dict[str, int]]:
    """(now, every lease, the managers alive as (holder, started, expires), takeovers and handoffs counted)."""
    table = schema.lease_changes
    with store._begin() as c:
        now = float(c.execute(select(_database_now(c))).scalar_one())
        leases = [_lease(r) for r in c.execute(select(L).order_by(L.c.space))]
        managers = [(r.holder, r.started, r.expires) for r in c.execute(
            select(schema.managers).where(schema.managers.c.expires > now).order_by(schema.managers.c.holder))]
        counted = {("takeovers" if r.taken_over else "claims"): r.n for r in c.execute(
            select(table.c.taken_over, func.count().label("n")).group_by(table.c.taken_over))}
    return now, leases, managers, counted
