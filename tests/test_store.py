"""The schema: Alembic migrations create exactly what the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from store.db import Database
from store.models import Base


def test_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent_and_safe_to_repeat(db: Database) -> None:
    db.migrate()
    db.migrate()
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0006_releases"
