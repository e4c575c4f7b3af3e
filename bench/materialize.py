"""How long laying a dataset version out in a worktree takes: N small files landed in the local
object store, one version holding them all, then ``workers.datasets.materialize`` into a fresh
directory (hard links on one filesystem), and the same with copies (another filesystem).

    python bench/materialize.py [--files 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from config.settings import Settings
from store import datasets
from store.blobs import FileBlobStore
from store.db import Database
from workers.datasets import blobs, materialize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loopline-bench-"))
    try:
        home = root / "home"
        settings = Settings(
            home=home,
            config_path=root / "loopline.yaml",
            database_url=f"sqlite:///{home / 'loopline.db'}",
            broker_url="redis://unused",
        )
        db = Database(settings.database_url)
        db.migrate()
        store = blobs(settings)
        started = time.perf_counter()
        entries = []
        for i in range(args.files):
            blob = store.put_bytes(f"x,y\n{i},{i * 2}\n".encode())
            entries.append(
                {
                    "path": f"batch-{i // 1000:02d}/part-{i:05d}.csv",
                    "sha256": blob.sha256,
                    "size": blob.size,
                    "rows": 1,
                }
            )
        number = datasets.land(db, "bench", entries, [], trigger={"kind": "data"})
        print(f"landed {args.files} objects as version {number} in {time.perf_counter() - started:.2f}s")

        def timed(label: str) -> None:
            times = []
            for attempt in range(args.repeat):
                dest = root / f"work-{label}-{attempt}" / "data/raw"
                t0 = time.perf_counter()
                count = materialize(settings, db, "bench", number, dest)
                times.append(time.perf_counter() - t0)
                assert count == args.files
            print(
                f"materialize {args.files} files ({label}): median {statistics.median(times):.3f}s,"
                f" best {min(times):.3f}s over {args.repeat}"
            )

        timed("hard links")
        with mock.patch.object(FileBlobStore, "materialize", _copy):
            timed("copies")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _copy(self: FileBlobStore, sha256: str, dest: Path) -> None:
    """What another filesystem gets: a copy of each blob."""
    shutil.copyfile(self.path(sha256), dest)


if __name__ == "__main__":
    main()
