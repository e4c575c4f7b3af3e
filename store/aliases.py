"""Model aliases (MLflow's model, not its retired stages) and the history of every move.

``candidate`` is the newest registered version, ``staging`` the newest one that passed its
integration tests or went on trial as a canary, ``production`` what the gateway serves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.db import Database
from store.models import AliasMove, ModelAlias, utcnow
from store.views import iso

ALIASES = ("candidate", "staging", "production")


def move(session: Session, model: str, alias: str, version: int, *, actor: str, reason: str | None) -> bool:
    """Point ``alias`` of ``model`` at ``version`` and record the move; ``False`` if it was there."""
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}: one of {', '.join(ALIASES)}")
    row = session.scalars(
        select(ModelAlias).where(ModelAlias.model_name == model, ModelAlias.alias == alias).with_for_update()
    ).one_or_none()
    if row is not None and row.version == version:
        return False
    session.add(
        AliasMove(
            model_name=model,
            alias=alias,
            from_version=row.version if row else None,
            to_version=version,
            actor=actor[:120],
            reason=reason,
        )
    )
    if row is None:
        session.add(ModelAlias(model_name=model, alias=alias, version=version))
    else:
        row.version, row.updated_at = version, utcnow()
    return True


def set_alias(db: Database, model: str, alias: str, version: int, *, actor: str, reason: str | None) -> bool:
    """:func:`move` in a transaction of its own (what ``register`` and the test stage call)."""
    with db.session() as s:
        return move(s, model, alias, version, actor=actor, reason=reason)


def version_of(session: Session, model: str, alias: str) -> int | None:
    return session.scalar(
        select(ModelAlias.version).where(ModelAlias.model_name == model, ModelAlias.alias == alias)
    )


def aliases(session: Session, model: str) -> dict[str, int | None]:
    rows = dict(
        session.execute(
            select(ModelAlias.alias, ModelAlias.version).where(ModelAlias.model_name == model)
        ).all()
    )
    return {alias: rows.get(alias) for alias in ALIASES}


def history(session: Session, model: str, limit: int = 100) -> list[dict[str, Any]]:
    """The moves of ``model``'s aliases, newest first."""
    moves = session.scalars(
        select(AliasMove).where(AliasMove.model_name == model).order_by(AliasMove.id.desc()).limit(limit)
    )
    return [
        {
            "alias": m.alias,
            "from_version": m.from_version,
            "to_version": m.to_version,
            "actor": m.actor,
            "reason": m.reason,
            "at": iso(m.created_at),
        }
        for m in moves
    ]
