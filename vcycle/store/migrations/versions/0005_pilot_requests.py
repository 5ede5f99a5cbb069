"""Pilots DIRAC's SiteDirector submitted through the Vcycle CE, until vcycle requests their machines.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vcycle.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pilot_requests",
        sa.Column("space", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("machinetype", sa.String(255), nullable=False),
        sa.Column("stamp", sa.String(32), nullable=False),
        sa.Column("ce", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Column("wrapper", sa.Text),
    )
    op.create_index("ix_pilot_requests_space_state", "pilot_requests", ["space", "state"])


def downgrade() -> None:
    op.drop_index("ix_pilot_requests_space_state", "pilot_requests")
    op.drop_table("pilot_requests")
