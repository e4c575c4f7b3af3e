"""Triggers: what each repository's schedule, drift, volume and performance trigger last did

Revision ID: 0008_trigger_state
Revises: 0007_users
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_trigger_state"
down_revision = "0007_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_state",
        sa.Column("repository", sa.String(64), primary_key=True),
        sa.Column("trigger", sa.String(16), primary_key=True),
        sa.Column("last_tick", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_id", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trigger_state")
