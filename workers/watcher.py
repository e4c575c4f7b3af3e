"""Drop-folder watch: a complete new file in a registered folder becomes a data delivery.

Polling rather than inotify: it works the same on network mounts and macOS, and a file is
only taken once its size and mtime have held still for ``settle`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.settings import Settings
from pipelines.events import DataObject, Event
from store.db import Database
from store.deliveries import record_delivery

log = logging.getLogger(__name__)
_TEMP_SUFFIXES = (".part", ".tmp", ".swp", ".crdownload", ".partial", ".filepart")


def is_candidate(name: str) -> bool:
    """Temp names (``*.part``, ``*.tmp``, ``~*``) and dotfiles are files still being written."""
    return not (name.startswith((".", "~")) or name.endswith(_TEMP_SUFFIXES))


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float
    done: bool = False
    #: Set once recorded: (repository, folder, sha256), to report the file's removal.
    landed: tuple[str, Path, str] | None = None


class FolderWatcher:
    def __init__(self, settings: Settings, db: Database, settle: float = 1.0) -> None:
        self.settings, self.db, self.settle = settings, db, settle
        self._seen: dict[Path, _Seen] = {}

    def folders(self) -> list[tuple[str, Path]]:
        return [
            (repo.name, Path(lake.folder).expanduser())
            for repo in self.settings.repositories
            for lake in repo.data_lake
            if lake.folder
        ]

    def scan_once(self, now: float | None = None) -> int:
        """Record every file that became complete since the last scan; returns how many."""
        now = time.monotonic() if now is None else now
        recorded = 0
        present: set[Path] = set()
        for repo_name, folder in self.folders():
            for path, stat in _walk(folder):
                present.add(path)
                seen = self._seen.get(path)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
                elif not seen.done and now - seen.since >= self.settle:
                    seen.done = True
                    recorded += self._record(repo_name, folder, path, stat)
        for gone in set(self._seen) - present:
            landed = self._seen.pop(gone).landed
            if landed is not None:  # a file that landed and was deleted: a version without it
                self._removed(*landed, gone)
        return recorded

    def _record(self, repo_name: str, folder: Path, path: Path, stat: os.stat_result) -> int:
        """One data delivery for the file as hashed now (its size is what was hashed)."""
        digest, size = hashlib.sha256(), 0
        try:  # O_NOFOLLOW: a file swapped for a symlink since the scan is not read through it
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
        except OSError as exc:
            log.warning("watch: cannot read %s: %s", path, exc)
            return 0
        sha = digest.hexdigest()
        key = path.relative_to(folder).as_posix()
        self._seen[path].landed = (repo_name, folder, sha)
        changed = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
        item = DataObject(
            store="folder",
            bucket=str(folder),
            key=key,
            size=size,
            etag=sha,
            event_time=changed,
            path=key,
        )
        event = Event(type="data", repository=repo_name, objects=(item,))
        # One delivery per content hash: the same bytes dropped twice (or renamed) start nothing new.
        result = record_delivery(
            self.db,
            provider="folder",
            delivery_id=f"{repo_name}:{sha}",
            body=sha.encode(),
            repository=repo_name,
            event=event,
        )
        log.info("watch: %s %s (%s)", key, result.status, result.event_id)
        return 1 if result.status == "accepted" else 0

    def _removed(self, repo_name: str, folder: Path, sha: str, path: Path) -> None:
        key = path.relative_to(folder).as_posix()
        item = DataObject(store="folder", bucket=str(folder), key=key, etag=sha, removed=True, path=key)
        event = Event(type="data", repository=repo_name, objects=(item,))
        result = record_delivery(
            self.db,
            provider="folder",
            delivery_id=f"{repo_name}:removed:{sha}:{hashlib.sha256(key.encode()).hexdigest()[:16]}:{time.time_ns()}",
            body=f"removed {sha}".encode(),
            repository=repo_name,
            event=event,
        )
        log.info("watch: %s removed (%s)", key, result.event_id)

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        log.info("watch: %s", ", ".join(str(f) for _, f in self.folders()) or "no folders configured")
        while not stop.is_set():
            try:
                self.scan_once()
            except Exception:
                log.exception("watch: scan failed")
            stop.wait(interval)


def _walk(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """Regular files under ``folder``; symlinks are never followed."""
    found: list[tuple[Path, os.stat_result]] = []
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() or not is_candidate(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                found.append((Path(entry.path), entry.stat(follow_symlinks=False)))
    return found
