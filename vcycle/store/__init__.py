"""The state store: machines with their history, backoffs, offering cooldowns, heartbeats, cycle reports.

SQLAlchemy Core over SQLite (WAL; the embedded default) or PostgreSQL
(psycopg 3; for sites with several managers). The schema is migrated with
Alembic when a store is opened. Writes for one space are atomic and
versioned: ``write`` names the version it read and raises StaleState if
another writer got there first, so nothing is ever overwritten blindly.
Writes of several spaces made at the same moment share one transaction
(group commit, vcycle/store/group.py), each still kept or refused on its own.

    Store.open(url)          -> Store (migrated)
    store.load(space)        -> SpaceState(version, records, backoffs, draining, cooldowns)
    store.write(space, version, records, history, backoffs, steps, cooldowns) -> new version

This package is the only place that speaks SQL.
"""

from __future__ import annotations

from vcycle.store.sql import SpaceState, Step, Store

__all__ = ["SpaceState", "Step", "Store"]
