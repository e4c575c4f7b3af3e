"""Releases: gateway traffic per deployment, model aliases and their history, release telemetry

Revision ID: 0006_releases
Revises: 0005_model_lineage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_releases"
down_revision = "0005_model_lineage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("traffic_percent", sa.Integer(), nullable=False, server_default="0"))
    # what served before the gateway existed keeps serving all of it
    op.execute("UPDATE deployments SET traffic_percent = 100 WHERE status = 'active'")
    op.create_table(
        "model_aliases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model_name", "alias", name="uq_model_alias"),
    )
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_alias_moves_model_name", "alias_moves", ["model_name"])
    op.create_table(
        "release_metrics",
        sa.Column("deployment_id", sa.Integer(), sa.ForeignKey("deployments.id"), primary_key=True),
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    # production is what the active deployment serves: start the alias there
    op.execute(
        "INSERT INTO model_aliases (model_name, alias, version, updated_at) "
        "SELECT model_name, 'production', MAX(version), MAX(created_at) FROM deployments "
        "WHERE status = 'active' GROUP BY model_name"
    )


def downgrade() -> None:
    op.drop_table("release_metrics")
    op.drop_index("ix_alias_moves_model_name", "alias_moves")
    op.drop_table("alias_moves")
    op.drop_table("model_aliases")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("traffic_percent")
