"""Which model version a run tests and ships, and the production version it competes with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from store import aliases, registry, runs
from store.db import Database
from workers import artifacts
from workers.steps import StepContext, StepError

if TYPE_CHECKING:
    from store.models import ModelVersion


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    artifact_path: Path
    sha256: str
    metrics: dict[str, Any]


def _ref(settings: Settings, mv: ModelVersion) -> ModelRef:
    """The version with its artifact as a file on this host (fetched from object storage)."""
    path = artifacts.local(settings, mv.artifact_path, mv.sha256)
    return ModelRef(mv.name, mv.version, path, mv.sha256, mv.metrics)


def production(settings: Settings, db: Database, name: str) -> ModelRef | None:
    """The version the ``production`` alias points at, if any."""
    with db.session() as s:
        version = aliases.version_of(s, name, "production")
        mv = registry.model_version(s, name, version) if version is not None else None
    return _ref(settings, mv) if mv else None


def model_for_run(ctx: StepContext) -> ModelRef | None:
    """The version this run registered; else production; else the newest registered one.

    A release (tag) run never retrains: it ships the version registered for its commit, and
    fails when there is none rather than deploying some other model.
    """
    name = ctx.project.model_name
    with ctx.db.session() as s:
        run = runs.get(s, ctx.run_id)
        if run is not None and run.trigger == "tag":
            released = registry.for_commit(s, run.repository, name, ctx.commit)
            if released is None:
                raise StepError(
                    f"no version of model {name!r} was registered for commit {ctx.commit[:12]}: "
                    "a release tag re-deploys the model that a deploy-branch run of the tagged "
                    "commit registered (or deployed), and none has"
                )
            return _ref(ctx.settings, released)
        mv = registry.model_version(s, name, run.model_version) if run and run.model_version else None
    if mv is not None:
        return _ref(ctx.settings, mv)
    current = production(ctx.settings, ctx.db, name)
    if current is not None:
        return current
    with ctx.db.session() as s:
        newest = registry.newest(s, name)
    return _ref(ctx.settings, newest) if newest else None
