"""The state store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are stored as ISO 8601 UTC text so that they sort, compare and read
the same on every database. The Alembic migrations in ``migrations/`` create
exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as ISO 8601 text in UTC."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # most come in UTC already, and are written as they are
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store")
            value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds")

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


metadata = MetaData()

spaces = Table(
    "spaces", metadata,
    Column("name", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("draining", Text, nullable=False, default="[]"),  # JSON list of machinetypes, "*" = all
    Column("updated_at", UTCDateTime),
)

machines = Table(
    "machines", metadata,
    Column("space", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("machinetype", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("state_cause", Text, nullable=False, server_default=""),  # the state table's words for its last edge
    Column("processors", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("manager", String(255), nullable=False),
    Column("cloud_id", String(255)),
    Column("zone", String(255)),
    Column("flavor", String(255)),
    Column("capacity", String(32)),  # the capacity type it was made as (spot, on-demand); NULL: the cloud's own
    Column("hs06", Float),
    Column("started_at", UTCDateTime),
    Column("stopped_at", UTCDateTime),
    Column("shutdown_at", UTCDateTime),
    Column("heartbeat_at", UTCDateTime),
    Column("shutdown_code", Integer),
    Column("shutdown_text", Text),
    Column("delete_attempts", Integer, nullable=False),
    Column("last_delete_at", UTCDateTime),
    Column("delete_requested", Text),
    Column("token_hash", String(64)),
    Column("features", Text),
    Column("registered_at", UTCDateTime),
    Column("idle_since", UTCDateTime),
    Column("accounted_at", UTCDateTime),  # accounting done (APEL, VacMon); NULL while GONE: not yet
    Column("made_by", Text),  # what made it (core/drift.py); NULL: made before drift was kept
    Column("interruption", Text),  # the cloud's interruption notice (core/interruptions.py)
    Column("interrupted_at", UTCDateTime),
    Index("ix_machines_space_state", "space", "state"),
    Index("ix_machines_name", "name"),
    Index("ix_machines_created", "created_at", "name"),  # the status page's machines, newest first
    Index("ix_machines_space_created", "space", "created_at", "name"),
)

history = Table(
    "machine_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("space", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("cause", Text, nullable=False, server_default=""),  # the state table's words for the edge
    Index("ix_history_space_name", "space", "name"),
)

backoffs = Table(
    "backoffs", metadata,
    Column("space", String(255), primary_key=True),
    Column("machinetype", String(255), primary_key=True),
    Column("last_abort_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failures", Integer, nullable=False, server_default="1"),  # aborts in a row (core/rules.py)
)

launches = Table(  # each machinetype's last launch outcomes (core/health.py), newest last, as JSON
    "launches", metadata,
    Column("space", String(255), primary_key=True),
    Column("machinetype", String(255), primary_key=True),
    Column("outcomes", Text, nullable=False),
)

cooldowns = Table(
    "cooldowns", metadata,
    Column("space", String(255), primary_key=True),
    Column("machinetype", String(255), primary_key=True),
    Column("offering", String(255), primary_key=True),
    Column("since", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failures", Integer, nullable=False, server_default="1"),  # times in a row without capacity
)

heartbeats = Table(
    "heartbeats", metadata,
    Column("space", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("at", UTCDateTime),
    Column("shutdown_message", Text),
    Column("shutdown_message_at", UTCDateTime),
    Column("address", String(255)),
    Column("detail", Text),
    Column("interruption", Text),
    Column("interruption_at", UTCDateTime),
    Column("written_at", UTCDateTime, nullable=False),  # when the store got it: for incremental reads
    Index("ix_heartbeats_space_written", "space", "written_at"),
)

reports = Table(
    "cycle_reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("space", String(255), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("summary", Text, nullable=False),  # JSON: counts, decisions, errors, timings
    Index("ix_reports_space_id", "space", "id"),
)

pilot_requests = Table(
    "pilot_requests", metadata,
    Column("space", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),  # the machine's name, chosen when the pilot was submitted
    Column("machinetype", String(255), nullable=False),
    Column("stamp", String(32), nullable=False),  # the pilot factory's id of the pilot (DIRAC's PilotStamp)
    Column("ce", String(255), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("state", String(16), nullable=False),  # pending, claimed, cancelled, expired
    Column("reason", Text, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("wrapper", Text),  # the pilot wrapper (it carries a proxy): dropped once the machine is requested
    Index("ix_pilot_requests_space_state", "space", "state"),
)

# What the machines of a machinetype used in one calendar month (UTC, by the month they ended), added to in the
# transaction that marks them accounted; APEL's cloud summary records are made from it.
usage_months = Table(
    "usage_months", metadata,
    Column("space", String(255), primary_key=True),
    Column("machinetype", String(255), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM
    Column("machines", Integer, nullable=False),
    Column("wall_seconds", BigInteger, nullable=False),
    Column("cpu_seconds", BigInteger, nullable=False),
    Column("processors", Integer, nullable=False),  # summed over the machines
    Column("hs06_per_processor", Float, nullable=False),  # of the last machine added
    Column("earliest_start", UTCDateTime, nullable=False),
    Column("latest_start", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),  # its summary last written to the APEL queues
)

# What each space's machines cost in each month (core/spend.py), added once per machine when it is accounted;
# the machines not accounted yet are priced from their records.
spend_months = Table(
    "spend_months", metadata,
    Column("space", String(255), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM
    Column("cost", Float, nullable=False),
    Column("machines", Integer, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

# The status page's time series: one point per space and cycle (vcycle/core/series.py), JSON of
# {machinetype: {key: count}}, kept for history_days.
series = Table(
    "series", metadata,
    Column("space", String(255), primary_key=True),
    Column("at", UTCDateTime, primary_key=True),
    Column("data", Text, nullable=False),
)

# Per-space ownership among the managers sharing one store (vcycle/store/leases.py). Times are the database's own
# clock in seconds since the epoch, so that hosts whose clocks disagree agree on who holds what.
leases = Table(
    "leases", metadata,
    Column("space", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),  # MANAGER_NAME@HOST:PID
    Column("epoch", Integer, nullable=False),  # one more at every claim: a write under an older one is refused
    Column("since", Float, nullable=False),  # when this holder claimed it
    Column("expires", Float, nullable=False),  # renewed every lease_renew_seconds; released: now
    Column("reason", Text, nullable=False, default=""),  # why it changed hands last
)

# The managers alive: each renews its row with its leases; a row past its expiry is a manager gone.
managers = Table(
    "managers", metadata,
    Column("holder", String(255), primary_key=True),
    Column("started", Float, nullable=False),
    Column("expires", Float, nullable=False),
)

# Leases that changed hands, for metrics (takeovers of expired leases against graceful handoffs).
lease_changes = Table(
    "lease_changes", metadata,
    Column("space", String(255), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("previous", String(255), nullable=False, default=""),
    Column("taken_over", Boolean, nullable=False),  # the previous holder's lease had expired (not released)
    Column("at", Float, nullable=False),
    Index("ix_lease_changes_at", "at"),
)

# Joboutputs kept in the store (joboutputs_in_store), so endpoints on several hosts share them.
joboutputs = Table(
    "joboutputs", metadata,
    Column("space", String(255), primary_key=True),
    Column("machine", String(255), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("written_at", Float, nullable=False),  # seconds since the epoch, for clean-up
)
