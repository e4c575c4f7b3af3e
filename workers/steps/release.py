"""Which model version a run tests and ships, and the production version it competes with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from store import aliases, registry
from store.db import Database
from store.models import ModelVersion, Run
from workers.steps import StepContext


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    artifact_path: Path
    sha256: str
    metrics: dict[str, Any]


def _ref(mv: ModelVersion) -> ModelRef:
    return ModelRef(mv.name, mv.version, Path(mv.artifact_path), mv.sha256, mv.metrics)


def production(db: Database, name: str) -> ModelRef | None:
    """The version the ``production`` alias points at, if any."""
    with db.session() as s:
        version = aliases.version_of(s, name, "production")
        mv = registry.model_version(s, name, version) if version is not None else None
        return _ref(mv) if mv else None


def model_for_run(ctx: StepContext) -> ModelRef | None:
    """The version this run registered; else production; else the newest registered one."""
    name = ctx.project.model_name
    with ctx.db.session() as s:
        run = s.get(Run, ctx.run_id)
        mv = registry.model_version(s, name, run.model_version) if run and run.model_version else None
        if mv is not None:
            return _ref(mv)
    current = production(ctx.db, name)
    if current is not None:
        return current
    with ctx.db.session() as s:
        newest = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == name)
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).one_or_none()
        return _ref(newest) if newest else None
