"""Interruption notices (core/interruptions.py): as machines report them, and kept with each machine.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("interruption", sa.Text))
        batch.add_column(sa.Column("interrupted_at", UTCDateTime))
    with op.batch_alter_table("heartbeats") as batch:
        batch.add_column(sa.Column("interruption", sa.Text))
        batch.add_column(sa.Column("interruption_at", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("heartbeats") as batch:
        batch.drop_column("interruption_at")
        batch.drop_column("interruption")
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("interrupted_at")
        batch.drop_column("interruption")
