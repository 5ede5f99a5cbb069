"""Joboutputs in the store (vcycle/store/joboutputs.py), for endpoints on several hosts.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "joboutputs",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("machine", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("written_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("joboutputs")
