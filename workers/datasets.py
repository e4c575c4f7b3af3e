"""The data ledger's worker side: landing objects in the object storage and a new dataset
version, and laying a version out in a run's worktree.

A data run's objects are fetched once (``workers/fetch.py`` checks size and ETag), stored by
sha256 and recorded as the repository's next version; every run then trains on the version it
names, materialized under ``data.into`` (hard links from a local object store: 10,000 files in
well under a second, ``bench/materialize.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from config.settings import Settings
from pipelines.config import RepoConfig
from pipelines.events import DataObject
from pipelines.ledger import Entry
from store import datasets, runs
from store.blobs import BlobStore, open_store
from store.clock import utcnow
from store.db import Database
from store.runs import origin
from workers.fetch import FetchError, destination, fetch_all
from workers.tables import count_rows


def blobs(settings: Settings) -> BlobStore:
    return open_store(settings.storage)


def _source(item: DataObject) -> dict[str, Any]:
    return {
        "store": item.store,
        "url": item.url,
        "bucket": item.bucket,
        "key": item.key,
        "etag": item.etag,
        "version": item.version,
        "account": item.account,
    }


def land(
    settings: Settings,
    db: Database,
    repo: RepoConfig,
    items: list[DataObject],
    *,
    deliveries: list[str],
    run_id: int | None = None,
) -> int:
    """Fetch ``items``' live objects into the object storage and record the version they make
    (removals taken out); returns its number. Nothing is recorded if a fetch fails."""
    live = [i for i in items if not i.removed]
    removed = [i.path or i.key for i in items if i.removed]
    store = blobs(settings)
    staging = settings.home / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory(dir=staging, prefix="land-") as tmp:
        into = Path(tmp)
        fetch_all(repo, live, into)
        now = utcnow().isoformat()
        for item in live:
            path = destination(into, item)
            rows = count_rows(path)
            blob = store.put_file(path, move=True)
            entries.append(
                {
                    "path": path.relative_to(into).as_posix(),
                    "sha256": blob.sha256,
                    "size": blob.size,
                    "rows": rows,
                    "source": _source(item),
                    "landed_at": now,
                }
            )
    kind = "data" if live else "removal"
    return datasets.land(
        db,
        repo.name,
        entries,
        removed,
        trigger={"kind": kind, "deliveries": deliveries, "run_id": run_id},
        run_id=run_id if live else None,
    )


def version_for(
    settings: Settings, db: Database, repo: RepoConfig, run_id: int, batch: list[DataObject]
) -> int:
    """The dataset version run ``run_id`` trains on, recorded on the run: the one it has (a
    retry: its original's), else the one its data objects land as, else the newest."""
    with db.session() as s:
        run = runs.get(s, run_id)
        assert run is not None
        first = origin(s, run)
        number = run.dataset_version if run.dataset_version is not None else first.dataset_version
        deliveries = [d.id for d in first.deliveries]
    if number is None and any(not item.removed for item in batch):
        number = datasets.for_run(db, run_id)
        if number is None:
            number = land(settings, db, repo, batch, deliveries=deliveries, run_id=run_id)
    if number is None:
        number = datasets.current_number(db, repo.name)
    runs.set_dataset_version(db, run_id, number)
    return number


def materialize(settings: Settings, db: Database, repository: str, number: int | None, into: Path) -> int:
    """Lay dataset version ``number`` out under ``into`` (a landed object replaces a committed
    file at its path); returns how many files."""
    manifest, _ = datasets.manifest(db, repository, number)
    root = into.resolve()
    made: set[Path] = set()
    pairs: list[tuple[str, Path]] = []
    for entry in manifest:
        dest = into / entry["path"]
        parent = dest.parent
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            if not parent.resolve().is_relative_to(root):
                raise FetchError(f"refusing manifest path {entry['path']!r}: it leads outside {into}")
            made.add(parent)
        pairs.append((entry["sha256"], dest))
    return blobs(settings).materialize_all(pairs)
