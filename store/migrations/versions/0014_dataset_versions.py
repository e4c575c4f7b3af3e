"""dataset_versions (the data ledger), runs.dataset_version, model_versions.dataset and .profile

Revision ID: 0014_dataset_versions
Revises: 0013_stage_leases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_dataset_versions"
down_revision = "0013_stage_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("repository", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("repository", "number", name="uq_dataset_version"),
    )
    op.create_index("ix_dataset_versions_repository", "dataset_versions", ["repository"])
    op.create_index("ix_dataset_versions_run_id", "dataset_versions", ["run_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("dataset_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("dataset", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("profile", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("profile")
        batch.drop_column("dataset")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("dataset_version")
    op.drop_index("ix_dataset_versions_run_id", "dataset_versions")
    op.drop_index("ix_dataset_versions_repository", "dataset_versions")
    op.drop_table("dataset_versions")
