"""``/api/datasets``: the data ledger of each repository, its versions and their differences."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify

from pipelines import ledger
from service.errors import NotFound
from service.state import loopline
from store import datasets, views

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.models import DatasetVersion

bp = Blueprint("datasets", __name__, url_prefix="/api/datasets")


def _known(repo: str) -> None:
    if loopline().settings.repo(repo) is None:
        raise NotFound(f"no repository {repo[:64]!r}")


@bp.get("/<repo>")
def versions(repo: str) -> Response:
    """Every version, newest first (version 0, nothing landed, is implicit)."""
    _known(repo)
    with loopline().db.session() as s:
        rows = views.dataset_versions(s, repo)
    return jsonify(repository=repo, current=rows[0]["version"] if rows else 0, versions=rows)


def _version(s: Session, repo: str, number: int) -> DatasetVersion:
    found = datasets.get(s, repo, number)
    if found is None:
        raise NotFound(f"{repo[:64]} has no dataset version {number}")
    return found


@bp.get("/<repo>/versions/<int:number>")
def version(repo: str, number: int) -> Response:
    _known(repo)
    with loopline().db.session() as s:
        return jsonify(views.dataset_detail(s, _version(s, repo, number)))


@bp.get("/<repo>/versions/<int:number>/diff/<int:other>")
def diff(repo: str, number: int, other: int) -> Response:
    """From version ``number`` to version ``other`` (0: nothing landed)."""
    _known(repo)
    with loopline().db.session() as s:
        old = _version(s, repo, number).manifest if number else []
        new = _version(s, repo, other).manifest if other else []
    return jsonify(repository=repo, version=number, to=other, **ledger.diff(old, new))
