"""Spend (core/spend.py): each machine's capacity type, to price it, and each space's cost by month.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("capacity", sa.String(32)))
    op.create_table(
        "spend_months",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("machines", sa.Integer, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spend_months")
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("capacity")
