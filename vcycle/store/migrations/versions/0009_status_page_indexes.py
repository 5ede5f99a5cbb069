"""The status page's machines a page at a time, newest first: the machines by creation, in all spaces and in
one.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_machines_created", "machines", ["created_at", "name"])
    op.create_index("ix_machines_space_created", "machines", ["space", "created_at", "name"])


def downgrade() -> None:
    op.drop_index("ix_machines_space_created", table_name="machines")
    op.drop_index("ix_machines_created", table_name="machines")
