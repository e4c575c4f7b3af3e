"""release_samples: the gateway's counters per release over time (traffic, latency, errors, callers)

Revision ID: 0009_release_samples
Revises: 0008_trigger_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_release_samples"
down_revision = "0008_trigger_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_samples",
        sa.Column("deployment_id", sa.Integer(), sa.ForeignKey("deployments.id"), primary_key=True),
        sa.Column("at", sa.BigInteger(), primary_key=True),
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("release_samples")
