"""The first schema: spaces, machines with history, backoffs, heartbeats, cycle reports.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spaces",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("draining", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime),
    )
    op.create_table(
        "machines",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("state_since", UTCDateTime, nullable=False),
        sa.Column("state_reason", sa.Text, nullable=False),
        sa.Column("processors", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("manager", sa.String(255), nullable=False),
        sa.Column("cloud_id", sa.String(255)),
        sa.Column("zone", sa.String(255)),
        sa.Column("flavor", sa.String(255)),
        sa.Column("hs06", sa.Float),
        sa.Column("started_at", UTCDateTime),
        sa.Column("stopped_at", UTCDateTime),
        sa.Column("shutdown_at", UTCDateTime),
        sa.Column("heartbeat_at", UTCDateTime),
        sa.Column("shutdown_code", sa.Integer),
        sa.Column("shutdown_text", sa.Text),
        sa.Column("delete_attempts", sa.Integer, nullable=False),
        sa.Column("last_delete_at", UTCDateTime),
        sa.Column("delete_requested", sa.Text),
    )
    op.create_index("ix_machines_space_state", "machines", ["space", "state"])
    op.create_index("ix_machines_name", "machines", ["name"])
    op.create_table(
        "machine_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("space", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_history_space_name", "machine_history", ["space", "name"])
    op.create_table(
        "backoffs",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), primary_key=True),
        sa.Column("last_abort_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "heartbeats",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("at", UTCDateTime),
        sa.Column("shutdown_message", sa.Text),
        sa.Column("shutdown_message_at", UTCDateTime),
        sa.Column("written_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_heartbeats_space_written", "heartbeats", ["space", "written_at"])
    op.create_table(
        "cycle_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("space", sa.String(255), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_index("ix_reports_space_id", "cycle_reports", ["space", "id"])


def downgrade() -> None:
    for index, table in (("ix_reports_space_id", "cycle_reports"), ("ix_history_space_name", "machine_history"),
                         ("ix_heartbeats_space_written", "heartbeats"),
                         ("ix_machines_name", "machines"), ("ix_machines_space_state", "machines")):
        op.drop_index(index, table_name=table)
    for table in ("cycle_reports", "heartbeats", "backoffs", "machine_history", "machines", "spaces"):
        op.drop_table(table)
