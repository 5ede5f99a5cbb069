"""Accounting: when each machine was accounted, and what each machinetype used per month.

Machines already GONE when this runs are marked accounted: nothing was
configured to account them when they ended, and a flood of old records on
upgrade is not what a site expects.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.add_column(sa.Column("accounted_at", UTCDateTime))
    op.execute("UPDATE machines SET accounted_at = state_since WHERE state = 'gone'")
    op.create_table(
        "usage_months",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("machines", sa.Integer, nullable=False),
        sa.Column("wall_seconds", sa.BigInteger, nullable=False),
        sa.Column("cpu_seconds", sa.BigInteger, nullable=False),
        sa.Column("processors", sa.Integer, nullable=False),
        sa.Column("hs06_per_processor", sa.Float, nullable=False),
        sa.Column("earliest_start", UTCDateTime, nullable=False),
        sa.Column("latest_start", UTCDateTime, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("usage_months")
    with op.batch_alter_table("machines") as table:
        table.drop_column("accounted_at")
