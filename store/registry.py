"""Registry look-ups shared by the API and the workers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Deployment, ModelVersion


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
