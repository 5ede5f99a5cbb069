"""Machines keep the hash of their endpoint token and their Machine/Job Features.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.add_column(sa.Column("token_hash", sa.String(64)))
        table.add_column(sa.Column("features", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.drop_column("features")
        table.drop_column("token_hash")
