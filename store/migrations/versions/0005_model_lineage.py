"""model_versions: branch, commit message, delivery and gate verdict, for the lineage chain

Revision ID: 0005_model_lineage
Revises: 0004_run_attempts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_model_lineage"
down_revision = "0004_run_attempts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("branch", sa.String(255), nullable=True))
        batch.add_column(sa.Column("commit_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("delivery_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("gate")
        batch.drop_column("delivery_id")
        batch.drop_column("commit_message")
        batch.drop_column("branch")
