"""The status page's time series in the state store: read a space's points, forget the old ones.

The points are written with the cycle reports (``Store.add_reports``), in the
same transaction; they are kept ``history_days``, so that a restart keeps the
plots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from vcycle.core.series import WEIGHT, merge
from vcycle.store import schema
from vcycle.store.points import decode, encode
from vcycle.store.sql import Store

T = schema.series
COMPACT_SECONDS = 600  # points older than a day are kept one per ten minutes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Statements of every housekeeping pass, built once (building them costs more than running them)
_SPACE: Any = bindparam("w_space")
_BEFORE, _FROM = (bindparam(name, type_=schema.UTCDateTime) for name in ("w_before", "w_from"))
_TO_COMPACT = select(T.c.at, T.c.data).where(T.c.space == _SPACE, T.c.at < _BEFORE, T.c.at >= _FROM)
_PRUNE = delete(T).where(T.c.space == _SPACE, T.c.at < _BEFORE)


def _bucket(at: datetime, step_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=(int((at - EPOCH).total_seconds()) // step_seconds) * step_seconds)


class Series:
    """The time series of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self, space: str, since: datetime) -> list[tuple[datetime, dict[str, dict[str, float]]]]:
        """The space's points from ``since`` on, oldest first."""
        with self.store._begin() as c:
            rows = c.execute(select(T.c.at, T.c.data).where(T.c.space == space, T.c.at >= since)
                             .order_by(T.c.at)).all()
        return [(r.at, decode(r.data)) for r in rows]

    def recent(self, space: str, count: int) -> list[tuple[datetime, dict[str, dict[str, float]]]]:
        """The space's last ``count`` points, oldest first."""
        with self.store._begin() as c:
            rows = c.execute(select(T.c.at, T.c.data).where(T.c.space == space).order_by(T.c.at.desc())
                             .limit(count)).all()
        return [(r.at, decode(r.data)) for r in reversed(rows)]

    def read_all(self, since: datetime) -> dict[str, list[tuple[datetime, dict[str, dict[str, float]]]]]:
        """Every known space's points from ``since`` on, oldest first (a range of the key of each: no index by
        time alone, which would cost every point a third copy of its time)."""
        with self.store._begin() as c:
            spaces = c.execute(select(schema.spaces.c.name)).scalars().all()
        return {space: points for space in sorted(spaces) if (points := self.read(space, since))}

    def compact(self, space: str, before: datetime, step_seconds: int = COMPACT_SECONDS) -> int:
        """Merge the space's points of the two days before ``before`` into one per ``step_seconds`` (buckets
        aligned to the epoch, complete ones only); how many rows fewer. Plots of more than a day have
        columns wider than a step, so they show the same."""
        step = timedelta(seconds=step_seconds)
        with self.store._begin(write=True) as c:
            rows = c.execute(_TO_COMPACT, {"w_space": space, "w_before": before,
                                           "w_from": before - timedelta(days=2)}).all()
            buckets: dict[datetime, list[tuple[datetime, dict[str, dict[str, float]]]]] = {}
            for r in rows:
                buckets.setdefault(_bucket(r.at, step_seconds), []).append((r.at, decode(r.data)))
            merged = 0
            for start, found in sorted(buckets.items()):
                if start + step > before or (len(found) == 1 and found[0][0] == start and WEIGHT in found[0][1]):
                    continue  # not complete yet, or merged already
                c.execute(delete(T).where(T.c.space == space, T.c.at >= start, T.c.at < start + step))
                c.execute(insert(T).values(space=space, at=start, data=encode(merge(p for _, p in found))))
                merged += len(found) - 1
        return merged

    def prune(self, space: str, before: datetime) -> int:
        """Forget the space's points older than ``before``; how many."""
        with self.store._begin(write=True) as c:
            return int(c.execute(_PRUNE, {"w_space": space, "w_before": before}).rowcount)
