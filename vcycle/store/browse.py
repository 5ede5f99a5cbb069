"""What the status page reads beyond ``status.collect``: machines a page at a time, heartbeat ages, one
machine's last heartbeat, a space's last cycle reports.

Each is one SQL statement that returns only what a page shows, so that a
store of 50,000 machines is paged, counted and binned by the database, not
loaded into the web process. Nothing secret leaves: records come without
their token hash (the page shows none anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select

from vcycle.core.model import Heartbeat, MachineRecord
from vcycle.core.states import MachineState
from vcycle.store import schema
from vcycle.store.sql import Store, _record

M = schema.machines
# Heartbeat ages are binned at these bounds (seconds); a machine with none is counted apart.
AGE_BOUNDS = (60, 300, 900, 3600, 6 * 3600)
AGE_LABELS = ("< 1 min", "1-5 min", "5-15 min", "15-60 min", "1-6 h", "> 6 h", "none yet")
HEARTBEATING = (MachineState.RUNNING.value, MachineState.DRAINING.value)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a machines query: the records shown and how many match in all."""

    records: tuple[MachineRecord, ...]
    total: int
    offset: int
    limit: int


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Browse:
    """Paged and aggregated reads of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def machines(self, *, space: str | None = None, state: str | None = None, text: str | None = None,
                 offset: int = 0, limit: int = 50) -> Page:
        """Machines newest first, filtered by space, state and a text found in the name, machinetype, cloud id
        or zone."""
        where: list[Any] = []
        if space is not None:
            where.append(M.c.space == space)
        if state is not None:
            where.append(M.c.state == state)
        if text:
            pattern = _like(text.lower())
            where.append(or_(*(func.lower(c).like(pattern, escape="\\")
                               for c in (M.c.name, M.c.machinetype, M.c.cloud_id, M.c.zone))))
        condition = and_(literal(True), *where)
        with self.store._begin() as c:
            total = int(c.execute(select(func.count()).select_from(M).where(condition)).scalar_one())
            rows = c.execute(select(M).where(condition).order_by(M.c.created_at.desc(), M.c.name)
                             .offset(offset).limit(limit)).all()
        return Page(tuple(_record(r) for r in rows), total, offset, limit)

    def heartbeat_ages(self, now: datetime, space: str | None = None) -> list[tuple[str, int]]:
        """How many running or draining machines last beat how long before ``now``, in AGE_LABELS' bins."""
        at = M.c.heartbeat_at
        bins = case(*((at >= now - timedelta(seconds=bound), i) for i, bound in enumerate(AGE_BOUNDS)),
                    (at.is_(None), len(AGE_BOUNDS) + 1), else_=len(AGE_BOUNDS))
        query = select(bins.label("bin"), func.count()).where(M.c.state.in_(HEARTBEATING))
        if space is not None:
            query = query.where(M.c.space == space)
        with self.store._begin() as c:
            found = {int(b): int(n) for b, n in c.execute(query.group_by("bin")).all()}
        return [(label, found.get(i, 0)) for i, label in enumerate(AGE_LABELS)]

    def heartbeat(self, space: str, name: str) -> Heartbeat | None:
        """The machine's last heartbeat as the endpoint stored it, if any."""
        h = schema.heartbeats
        with self.store._begin() as c:
            r = c.execute(select(h).where(h.c.space == space, h.c.name == name)).one_or_none()
        return None if r is None else Heartbeat(r.name, r.at, r.shutdown_message, r.shutdown_message_at,
                                                r.address, r.detail, r.interruption, r.interruption_at)

    def reports(self, space: str, count: int = 10) -> list[dict[str, Any]]:
        """The space's last ``count`` cycle reports, newest first, as dicts."""
        r = schema.reports
        with self.store._begin() as c:
            rows = c.execute(select(r).where(r.c.space == space).order_by(r.c.id.desc()).limit(count)).all()
        return [{"started_at": row.started_at, "finished_at": row.finished_at, "ok": row.ok,
                 **json.loads(row.summary)} for row in rows]
