"""runs: the commit's message and author, so that runs can be scanned

Revision ID: 0012_run_commit
Revises: 0011_outcomes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_run_commit"
down_revision = "0011_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("author", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("author")
        batch.drop_column("message")
