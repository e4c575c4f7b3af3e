"""Finished stage logs, release bundles and the host a release runs on: hosts share no disk

Revision ID: 0016_object_storage
Revises: 0015_reproductions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_object_storage"
down_revision = "0015_reproductions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("log_object", sa.String(255), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("bundle_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("bundle_sha256")
        batch.drop_column("host")
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("log_object")
