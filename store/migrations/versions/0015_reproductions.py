"""reproductions: model versions rebuilt from their lineage by a worker (POST …/reproduce)

Revision ID: 0015_reproductions
Revises: 0014_dataset_versions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_reproductions"
down_revision = "0014_dataset_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reproductions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(100), nullable=True, unique=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pgid", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_reproductions_model_version_id", "reproductions", ["model_version_id"])
    op.create_index("ix_reproductions_status", "reproductions", ["status"])


def downgrade() -> None:
    op.drop_index("ix_reproductions_status", "reproductions")
    op.drop_index("ix_reproductions_model_version_id", "reproductions")
    op.drop_table("reproductions")
