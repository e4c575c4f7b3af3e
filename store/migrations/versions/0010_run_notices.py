"""Notifications: which run statuses were announced to the notification targets

Revision ID: 0010_run_notices
Revises: 0009_release_samples
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_run_notices"
down_revision = "0009_release_samples"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_notices",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("status", sa.String(20), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_notices")
