"""The accounting ledger in the state store: which GONE machines were accounted, and each month's usage.

A machine is accounted once: ``account`` marks it and adds its usage to its
month in one transaction, and skips any already marked, so a month is never
summed twice whatever crashes between the messages and the mark. The
messages themselves are sent at least once (APEL's server keeps one record
per machine and per summary key, so a repeat replaces, never adds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from vcycle.core.model import MachineRecord
from vcycle.core.states import MachineState
from vcycle.core.usage import MonthUsage, Usage, add
from vcycle.store import schema
from vcycle.store.sql import Store, _record

M = schema.machines
U = schema.usage_months
C = schema.spend_months
GONE = MachineState.GONE.value

# The statements of the ledger, built once (an accounting pass runs whenever a machine ends).
_SPACE: Any = bindparam("w_space")
_MONTH: Any = bindparam("w_month")
_MT: Any = bindparam("w_machinetype")
_UNACCOUNTED = select(M).where(M.c.space == _SPACE, M.c.state == GONE, M.c.accounted_at.is_(None)) \
    .order_by(M.c.state_since, M.c.name)
_LOCK_SPACE = select(schema.spaces.c.version).where(schema.spaces.c.name == _SPACE).with_for_update()
_MARK = update(M).where(M.c.space == _SPACE, M.c.state == GONE, M.c.accounted_at.is_(None),
                        M.c.name.in_(bindparam("w_names", expanding=True))) \
    .values(accounted_at=bindparam("w_at")).returning(M.c.name)
_MONTHS_OF = select(U).where(U.c.space == _SPACE, U.c.machinetype == _MT,
                             U.c.month.in_(bindparam("w_months", expanding=True)))
_MONTH_UPDATE = update(U).where(U.c.space == _SPACE, U.c.machinetype == _MT, U.c.month == _MONTH)
_COST_OF = select(C.c.cost, C.c.machines).where(C.c.space == _SPACE, C.c.month == _MONTH)
_COST_UPDATE = update(C).where(C.c.space == _SPACE, C.c.month == _MONTH)
_SPENT = select(C.c.space, C.c.cost).where(C.c.month == _MONTH)
_UNSENT = select(U).where(U.c.space == _SPACE, or_(
    U.c.sent_at.is_(None), (U.c.sent_at < U.c.changed_at) & (U.c.sent_at < bindparam("w_before")))) \
    .order_by(U.c.machinetype, U.c.month)


def _month(r: Any) -> MonthUsage:
    return MonthUsage(r.space, r.machinetype, r.month, r.machines, r.wall_seconds, r.cpu_seconds, r.processors,
                      r.hs06_per_processor, r.earliest_start, r.latest_start)


class Ledger:
    """The accounting rows of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def unaccounted(self, space: str) -> list[MachineRecord]:
        """The space's GONE machines not yet accounted, oldest first."""
        with self.store._begin() as c:
            rows = c.execute(_UNACCOUNTED, {"w_space": space}).all()
        return [_record(r) for r in rows]

    def account(self, space: str, names: Iterable[str], usages: Sequence[Usage], at: datetime,
                costs: Mapping[str, Mapping[str, float]] | None = None) -> set[str]:
        """Mark the GONE machines ``names`` accounted at ``at`` and add the ``usages`` and ``costs`` (machine ->
        month -> cost, core/spend.py) of those not marked before to their months; the names marked now (the
        others were accounted already, or are not GONE)."""
        wanted = sorted(set(names))
        if not wanted:
            return set()
        with self.store._begin(write=True) as c:
            return self._mark(c, space, wanted, usages, at, costs)

    def account_with_unsent(self, space: str, names: Iterable[str], usages: Sequence[Usage], at: datetime,
                            costs: Mapping[str, Mapping[str, float]] | None, before: datetime
                            ) -> tuple[set[str], list[MonthUsage]]:
        """``account``, and then ``unsent(space, before)``, in one transaction: the months whose summaries are
        due, with what was just added."""
        wanted = sorted(set(names))
        with self.store._begin(write=True) as c:
            marked = self._mark(c, space, wanted, usages, at, costs) if wanted else set()
            return marked, _unsent(c, space, before)

    def _mark(self, c: Connection, space: str, wanted: list[str], usages: Sequence[Usage], at: datetime,
              costs: Mapping[str, Mapping[str, float]] | None) -> set[str]:
        # One accountant of a space at a time (on SQLite the store's write lock already does this), and
        # a machine marked by one is not marked again by another: the UPDATE re-checks accounted_at.
        if c.dialect.name != "sqlite":
            c.execute(_LOCK_SPACE, {"w_space": space})
        open_ = set(c.execute(_MARK, {"w_space": space, "w_names": wanted, "w_at": at}).scalars())
        if not open_:
            return set()
        self._add_costs(c, space, {n: m for n, m in (costs or {}).items() if n in open_}, at)
        counted = [u for u in usages if u.machine in open_ and u.space == space]
        keys = sorted({(u.machinetype, u.month) for u in counted})
        months: dict[tuple[str, str], MonthUsage | None] = dict.fromkeys(keys)
        for mt in sorted({k[0] for k in keys}):
            for row in c.execute(_MONTHS_OF, {"w_space": space, "w_machinetype": mt,
                                              "w_months": sorted(k[1] for k in keys if k[0] == mt)}):
                months[(row.machinetype, row.month)] = _month(row)
        stored = {k for k, m in months.items() if m is not None}
        for u in sorted(counted, key=lambda u: (u.ended_at, u.machine)):
            months[(u.machinetype, u.month)] = add(months[(u.machinetype, u.month)], u)
        for (mt, month), m in months.items():
            assert m is not None  # every key has a usage
            values = {**_columns(m), "changed_at": at}
            if (mt, month) in stored:  # sent_at stays: a month changing all day is still summed hourly
                c.execute(_MONTH_UPDATE, {**values, "w_space": space, "w_machinetype": mt, "w_month": month})
            else:
                c.execute(insert(U).values(**values))
        return open_

    @staticmethod
    def _add_costs(c: Any, space: str, costs: Mapping[str, Mapping[str, float]], at: datetime) -> None:
        summed: dict[str, list[float]] = {}
        for months in costs.values():
            for month, amount in months.items():
                row = summed.setdefault(month, [0.0, 0])
                row[0] += amount
                row[1] += 1
        for month, (amount, machines) in sorted(summed.items()):
            old = c.execute(_COST_OF, {"w_space": space, "w_month": month}).first()
            if old is None:
                c.execute(insert(C).values(space=space, month=month, cost=amount, machines=int(machines),
                                           changed_at=at))
            else:
                c.execute(_COST_UPDATE, {"w_space": space, "w_month": month, "cost": old.cost + amount,
                                         "machines": old.machines + int(machines), "changed_at": at})

    def spent(self, month: str) -> dict[str, float]:
        """space -> what its accounted machines cost in ``month`` (YYYY-MM)."""
        with self.store._begin() as c:
            return spent_in(c, month)

    def unaccounted_elsewhere(self, space: str) -> dict[str, list[MachineRecord]]:
        """The other spaces' machines not accounted yet (alive, or gone and waiting), by space."""
        with self.store._begin() as c:
            rows = c.execute(select(M).where(M.c.space != space, M.c.accounted_at.is_(None))).all()
        found: dict[str, list[MachineRecord]] = {}
        for r in rows:
            found.setdefault(r.space, []).append(_record(r))
        return found

    def unsent(self, space: str, before: datetime) -> list[MonthUsage]:
        """Months whose figures changed since their summary was last sent, if that was before ``before`` (or
        never)."""
        with self.store._begin() as c:
            return _unsent(c, space, before)

    def months(self, space: str) -> list[MonthUsage]:
        """Every month kept for the space."""
        with self.store._begin() as c:
            rows = c.execute(select(U).where(U.c.space == space).order_by(U.c.machinetype, U.c.month)).all()
        return [_month(r) for r in rows]

    def sent(self, months: Iterable[MonthUsage], at: datetime) -> None:
        """The summaries of ``months``, as read at ``at``, were written: they wait for their next change."""
        with self.store._begin(write=True) as c:
            for m in months:
                c.execute(update(U).where(U.c.space == m.space, U.c.machinetype == m.machinetype,
                                          U.c.month == m.month).values(sent_at=at))


def _unsent(c: Connection, space: str, before: datetime) -> list[MonthUsage]:
    return [_month(r) for r in c.execute(_UNSENT, {"w_space": space, "w_before": before})]


def _columns(m: MonthUsage) -> dict[str, object]:
    return {"space": m.space, "machinetype": m.machinetype, "month": m.month, "machines": m.machines,
            "wall_seconds": m.wall_seconds, "cpu_seconds": m.cpu_seconds, "processors": m.processors,
            "hs06_per_processor": m.hs06_per_processor, "earliest_start": m.earliest_start,
            "latest_start": m.latest_start}


def spent_in(c: Connection, month: str) -> dict[str, float]:
    """space -> what its accounted machines cost in ``month`` (YYYY-MM), read in the transaction ``c`` (a cycle
    reads it with its records: Store.look's ``also``)."""
    return {r.space: r.cost for r in c.execute(_SPENT, {"w_month": month})}
