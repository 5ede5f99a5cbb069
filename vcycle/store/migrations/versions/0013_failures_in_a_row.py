"""Failures in a row: each backoff and each offering cooldown counts them, and its hold doubles with them.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("backoffs", "cooldowns"):
        with op.batch_alter_table(name) as table:
            table.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    for name in ("backoffs", "cooldowns"):
        with op.batch_alter_table(name) as table:
            table.drop_column("failures")
