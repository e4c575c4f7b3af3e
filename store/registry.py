"""The model registry: looking versions and releases up, and registering a version once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.db import Database
from store.models import Deployment, ModelVersion, Run


def current_deployment(session: Session, model: str) -> Deployment | None:
    """The active deployment of ``model``: what serves now."""
    return session.scalars(
        select(Deployment)
        .where(Deployment.model_name == model, Deployment.status == "active")
        .order_by(Deployment.id.desc())
        .limit(1)
    ).one_or_none()


def model_version(session: Session, name: str, version: int) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).one_or_none()


def latest_deployment(session: Session, name: str, version: int) -> Deployment | None:
    """The newest deployment of one version, active or not."""
    return session.scalars(
        select(Deployment)
        .where(Deployment.model_name == name, Deployment.version == version)
        .order_by(Deployment.id.desc())
        .limit(1)
    ).one_or_none()


def known(session: Session, name: str) -> bool:
    """Whether any version of model ``name`` was registered."""
    return session.scalar(select(ModelVersion.id).where(ModelVersion.name == name).limit(1)) is not None


def deployments(session: Session, name: str, limit: int) -> list[Deployment]:
    """The model's newest ``limit`` releases, whatever their status (none: never deployed)."""
    query = select(Deployment).where(Deployment.model_name == name).order_by(Deployment.id.desc())
    return list(session.scalars(query.limit(limit)))


@dataclass(frozen=True)
class Serving:
    """What serves a model now, as the triggers compare against it."""

    release: int
    version: int
    #: The profile of its training data (None: registered before profiles, or no tables).
    profile: dict[str, Any] | None
    #: The dataset version it was trained on (0: nothing had landed).
    dataset_version: int


def serving(db: Database, model: str) -> Serving | None:
    """The release serving ``model`` now, with its version's training profile and dataset version."""
    with db.session() as s:
        dep = current_deployment(s, model)
        if dep is None:
            return None
        mv = model_version(s, model, dep.version)
        dataset = (mv.dataset if mv else None) or {}
        return Serving(dep.id, dep.version, mv.profile if mv else None, int(dataset.get("version") or 0))


def newest(session: Session, name: str) -> ModelVersion | None:
    """The newest version of model ``name``."""
    query = select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.version.desc())
    return session.scalars(query.limit(1)).one_or_none()


def for_commit(session: Session, repository: str, name: str, commit: str) -> ModelVersion | None:
    """The version registered from ``commit``; else the one a run of ``commit`` deployed (a
    commit that changed only app code shipped the model in production at the time)."""
    registered = session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.name == name, ModelVersion.repository == repository, ModelVersion.commit == commit
        )
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).one_or_none()
    if registered is not None:
        return registered
    deployed = session.scalars(
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
    return model_version(session, name, deployed.version) if deployed else None


def of_run(session: Session, run_id: int) -> ModelVersion | None:
    """The version run ``run_id`` registered (an attempt whose worker died may have)."""
    return session.scalars(select(ModelVersion).where(ModelVersion.run_id == run_id)).first()


def register(db: Database, name: str, run_id: int, attempts: int = 5, **fields: Any) -> int | None:
    """Register the next version of model ``name`` for run ``run_id`` (recorded on the run);
    returns the version, or None when ``attempts`` runs registering at once all took it first
    (the unique ``(name, version)`` decides)."""
    for _attempt in range(attempts):
        with db.session() as s:
            newest_version = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
        version = (newest_version or 0) + 1
        try:
            with db.session() as s:
                s.add(ModelVersion(name=name, version=version, run_id=run_id, **fields))
                run = s.get(Run, run_id)
                assert run is not None
                run.model_version = version
            return version
        except IntegrityError:
            continue
    return None
