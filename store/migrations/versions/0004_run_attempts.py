"""runs: attempt and retry_of (retries), superseded_by (supersession), reported_status (commit statuses)

Revision ID: 0004_run_attempts
Revises: 0003_lake_objects
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_run_attempts"
down_revision = "0003_lake_objects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reported_status", sa.String(length=20), nullable=True))
        batch.create_foreign_key("fk_runs_retry_of", "runs", ["retry_of"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_retry_of", type_="foreignkey")
        batch.drop_column("reported_status")
        batch.drop_column("superseded_by")
        batch.drop_column("retry_of")
        batch.drop_column("attempt")
