"""What made each machine (core/drift.py), to tell the machines a configuration change left behind.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("made_by", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("made_by")
