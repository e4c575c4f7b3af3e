"""Which model version a run tests and ships, and the production version it competes with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from store import aliases, registry
from store.db import Database
from store.models import Deployment, ModelVersion, Run
from workers import artifacts
from workers.steps import StepContext, StepError


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


def _for_commit(s: Session, repository: str, name: str, commit: str) -> ModelVersion | None:
    """The version registered from ``commit``; else the one a run of ``commit`` deployed (a
    commit that changed only app code shipped the model in production at the time)."""
    registered = s.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.name == name, ModelVersion.repository == repository, ModelVersion.commit == commit
        )
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).one_or_none()
    if registered is not None:
        return registered
    deployed = s.scalars(
        select(Deployment)
        .join(Run, Run.id == Deployment.run_id)
        .where(
            Deployment.model_name == name,
            Deployment.status != "failed",
            Run.repository == repository,
            Run.commit == commit,
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    ).one_or_none()
    return registry.model_version(s, name, deployed.version) if deployed else None


def model_for_run(ctx: StepContext) -> ModelRef | None:
    """The version this run registered; else production; else the newest registered one.

    A release (tag) run never retrains: it ships the version registered for its commit, and
    fails when there is none rather than deploying some other model.
    """
    name = ctx.project.model_name
    with ctx.db.session() as s:
        run = s.get(Run, ctx.run_id)
        if run is not None and run.trigger == "tag":
            released = _for_commit(s, run.repository, name, ctx.commit)
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
        newest = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == name)
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).one_or_none()
    return _ref(ctx.settings, newest) if newest else None
