"""Stages hold a lease while they run and remember their publication; intakes count attempts;
a probe row /healthz writes

Revision ID: 0013_stage_leases
Revises: 0012_run_commit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_stage_leases"
down_revision = "0012_run_commit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("task_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pgid", sa.Integer(), nullable=True))
        batch.create_index("ix_stages_status", ["status"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "probes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # Stages under way were published by the Celery chains of before; the workers that ran them
    # are gone after an upgrade, so their leases are over and the reconciler takes them over.
    op.execute("UPDATE stages SET published_at = CURRENT_TIMESTAMP WHERE status IN ('queued', 'running')")
    op.execute("UPDATE stages SET lease_expires_at = CURRENT_TIMESTAMP WHERE status = 'running'")


def downgrade() -> None:
    op.drop_table("probes")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("attempts")
    with op.batch_alter_table("stages") as batch:
        batch.drop_index("ix_stages_status")
        for column in ("pgid", "lease_expires_at", "lease_owner", "published_at", "task_id", "attempt"):
            batch.drop_column(column)
