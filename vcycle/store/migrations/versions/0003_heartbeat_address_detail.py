"""Heartbeats keep the machine's address and the body of its last JSON heartbeat.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("heartbeats") as table:
        table.add_column(sa.Column("address", sa.String(255)))
        table.add_column(sa.Column("detail", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("heartbeats") as table:
        table.drop_column("detail")
        table.drop_column("address")
