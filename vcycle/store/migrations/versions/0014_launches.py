"""Launch health: each machinetype's last launch outcomes (core/health.py), newest last, as JSON.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "launches",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), primary_key=True),
        sa.Column("outcomes", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("launches")
