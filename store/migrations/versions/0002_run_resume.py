"""runs.resume_requested_at: approved runs waiting for the relay to resume them

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("resume_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_runs_resume_requested_at", ["resume_requested_at"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_resume_requested_at")
        batch.drop_column("resume_requested_at")
