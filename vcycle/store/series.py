"""The status page's time series in the state store: read a space's points, forget the old ones.

The points are written with the cycle reports (``Store.add_reports``), in the
same transaction; they are kept ``history_days``, so that a restart keeps the
plots.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import delete, select

from vcycle.store import schema
from vcycle.store.sql import Store

T = schema.series


class Series:
    """The time series of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self, space: str, since: datetime) -> list[tuple[datetime, dict[str, dict[str, int]]]]:
        """The space's points from ``since`` on, oldest first."""
        with self.store._begin() as c:
            rows = c.execute(select(T.c.at, T.c.data).where(T.c.space == space, T.c.at >= since)
                             .order_by(T.c.at)).all()
        return [(r.at, json.loads(r.data)) for r in rows]

    def prune(self, space: str, before: datetime) -> int:
        """Forget the space's points older than ``before``; how many."""
        with self.store._begin(write=True) as c:
            return int(c.execute(delete(T).where(T.c.space == space, T.c.at < before)).rowcount)
