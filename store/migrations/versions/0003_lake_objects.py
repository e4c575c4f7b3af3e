"""lake_objects: the newest storage event per object, so a late older event cannot override it

Revision ID: 0003_lake_objects
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_lake_objects"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lake_objects",
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("sequencer", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("object_id"),
    )


def downgrade() -> None:
    op.drop_table("lake_objects")
