"""users: named people with a role and a hashed API token

Revision ID: 0007_users
Revises: 0006_releases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_users"
down_revision = "0006_releases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", name="uq_user_name"),
    )


def downgrade() -> None:
    op.drop_table("users")
