"""Every history entry keeps the cause of its edge (the state table's words), the machine's last one too.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machine_history") as table:
        table.add_column(sa.Column("cause", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("machines") as table:
        table.add_column(sa.Column("state_cause", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("machines") as table:
        table.drop_column("state_cause")
    with op.batch_alter_table("machine_history") as table:
        table.drop_column("cause")
