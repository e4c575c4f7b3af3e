"""Hosts announce themselves and heartbeat; a release remembers its last move between hosts

Revision ID: 0017_hosts
Revises: 0016_object_storage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_hosts"
down_revision = "0016_object_storage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("serves", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("moved", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("moved")
    op.drop_table("hosts")
