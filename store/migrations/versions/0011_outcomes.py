"""Outcomes: the gateway's predictions by request id (for feedback), sampled inputs (for drift)

Revision ID: 0011_outcomes
Revises: 0010_run_notices
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_outcomes"
down_revision = "0010_run_notices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32), nullable=False, unique=True),
        sa.Column("model_name", sa.String(64), nullable=False, index=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False, index=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labelled", sa.Integer(), nullable=True),
        sa.Column("correct", sa.Integer(), nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "input_samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False, index=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_sampling",
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_sampling")
    op.drop_table("input_samples")
    op.drop_table("predictions")
