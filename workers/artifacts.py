"""What one stage hands to the next across hosts, through object storage: a run's worktree on
this host, the files a training stage produced, a registered model's artifact, a release bundle.

Hosts share no disk: ``LOOPLINE_HOME`` is this process's scratch (mirrors, worktrees, the
environment cache, local copies of blobs). Whatever a later stage on another host needs is put
into the object storage (``LOOPLINE_STORAGE_URL``) by sha256 and fetched from there.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from config.settings import Settings
from pipelines.config import RepoConfig
from store.blobs import BlobError, blob_key, hash_file
from store.db import Database
from workers import datasets as ledger
from workers.locks import host_lock, mirror_lock
from workers.projects import mirror, project_in, workspace

#: Files in a release directory that its process writes: never part of its bundle.
RUNTIME_FILES = ("server.log", "environment.log")


def location(settings: Settings, sha256: str, filename: str) -> str:
    """Where a registered artifact lives, as the registry records it: the blob's URL, with the
    file's own name as the fragment (a copy is made under that name)."""
    return f"{settings.storage.rstrip('/')}/{blob_key(sha256)}#{filename}"


def local(settings: Settings, where: str, sha256: str) -> Path:
    """A registered artifact as a file on this host: fetched from object storage once into
    ``LOOPLINE_HOME/artifacts/<sha256>/`` (a path registered before object storage: itself)."""
    if "://" not in where:
        return Path(where)
    dest = settings.home / "artifacts" / sha256 / (urlsplit(where).fragment or "model")
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    try:
        ledger.blobs(settings).materialize(sha256, part)
        os.replace(part, dest)  # two fetching processes end with the same bytes
    finally:
        part.unlink(missing_ok=True)
    return dest


def store_outputs(settings: Settings, worktree: Path, paths: Iterable[str]) -> dict[str, str]:
    """Put the files a stage produced into object storage; ``{path: sha256}`` for its detail,
    from which a later stage on another host lays them into its worktree (:func:`worktree`)."""
    blobs = ledger.blobs(settings)
    return {rel: blobs.put_file(worktree / rel).sha256 for rel in paths if (worktree / rel).is_file()}


def worktree(
    settings: Settings,
    db: Database,
    repo: RepoConfig,
    run_id: int,
    commit: str,
    dataset_version: int | None,
    outputs: Mapping[str, str],
) -> Path:
    """The run's worktree on this host: made here (mirror fetched if it lacks the commit, the
    run's dataset version laid out) when an earlier stage ran on another host, with the files
    earlier stages produced (``outputs``) laid in where this host's copy differs (a committed
    ``dvc.lock`` or metrics file is replaced by the one the retrain wrote)."""
    path = workspace(settings, run_id)
    with host_lock(settings.home, f"worktree-{run_id}"):
        if not (path / ".git").exists():
            mirror_ = mirror(settings, repo)
            with mirror_lock(settings.home, repo.name):
                if not (mirror_.path / "HEAD").exists() or not mirror_.has_commit(commit):
                    mirror_.update()
            mirror_.remove_worktree(path)
            mirror_.add_worktree(path, commit)
            ledger.materialize(settings, db, repo.name, dataset_version, path / project_in(path).data_into)
        root = path.resolve()
        blobs = ledger.blobs(settings)
        for rel, sha256 in outputs.items():
            dest = path / rel
            if not dest.resolve().is_relative_to(root):
                raise BlobError(f"refusing output path {rel!r}: it leads outside the worktree")
            if dest.is_file() and hash_file(dest).sha256 == sha256:
                continue  # produced here, or laid in by an earlier stage
            dest.parent.mkdir(parents=True, exist_ok=True)
            blobs.materialize(sha256, dest)  # replaces the commit's own copy (e.g. its dvc.lock)
    return path


def pack(settings: Settings, directory: Path) -> str:
    """A release directory as a tar in object storage (its sha256): any serving host can start
    the release again from it (:func:`unpack`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(directory.iterdir()):
            if entry.name not in RUNTIME_FILES:
                tar.add(entry, arcname=entry.name)
    return ledger.blobs(settings).put_bytes(buffer.getvalue()).sha256


def unpack(settings: Settings, sha256: str, directory: Path) -> Path:
    """Write the release bundle ``sha256`` into ``directory`` (made aside, then renamed)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".bundle-") as tmp:
        data = ledger.blobs(settings).get(sha256)
        staged = Path(tmp) / "release"
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(staged, filter="data")
        os.replace(staged, directory)
    return directory
