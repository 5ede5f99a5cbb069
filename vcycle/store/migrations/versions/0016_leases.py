"""Leases (vcycle/store/leases.py): which manager holds each space, the managers alive, and the changes of hands.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "managers",
        sa.Column("holder", sa.String(255), primary_key=True),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "lease_changes",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("previous", sa.String(255), nullable=False),
        sa.Column("taken_over", sa.Boolean, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_lease_changes_at", "lease_changes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_lease_changes_at", "lease_changes")
    op.drop_table("lease_changes")
    op.drop_table("managers")
    op.drop_table("leases")
