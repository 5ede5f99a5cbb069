"""Machines keep when their batch daemon (an HTCondor startd) first registered and since when it has been idle.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.add_column(sa.Column("registered_at", UTCDateTime))
        table.add_column(sa.Column("idle_since", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.drop_column("idle_since")
        table.drop_column("registered_at")
