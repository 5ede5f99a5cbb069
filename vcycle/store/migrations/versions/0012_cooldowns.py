"""Offering cooldowns: the last time each machinetype's offering (flavor) had no capacity.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cooldowns",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), primary_key=True),
        sa.Column("offering", sa.String(255), primary_key=True),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cooldowns")
