"""A drop-folder storm: the real watcher, the relay's debounce and intake turn 1,000 files written
within seconds (with temp names, dotfiles, symlinks and identical rewrites among them) into one run."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from pipelines.config import DataLakeEntry
from store.db import Database
from store.models import Delivery, Run, utcnow
from tests.conftest import Project, make_settings
from tests.test_actions_relay import Recorder
from workers.intake import prepare_run
from workers.relay import relay_once
from workers.watcher import FolderWatcher

FILES = 1000


def _count(db: Database) -> int:
    with db.session() as s:
        return s.query(Delivery).count()


def test_a_thousand_files_become_one_run(tmp_path: Path, project: Project, db: Database) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    settings = make_settings(
        tmp_path, (project.repo_config(data_lake=(DataLakeEntry(folder=str(lake)),)),), db_url=db.url
    )
    project.push()
    watcher = FolderWatcher(settings, db, settle=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        for i in range(FILES):
            folder = lake / f"day-{i % 10}"
            folder.mkdir(exist_ok=True)
            # Written the way uploaders do: a temporary name, then a rename.
            part = folder / f"batch-{i:04}.csv.part"
            part.write_text(f"x,y,target\n{i},{i % 7},{i % 2}\n")
            os.replace(part, folder / f"batch-{i:04}.csv")
        (lake / ".hidden.csv").write_text("x\n")
        (lake / "~lock.csv").write_text("x\n")
        (lake / "download.crdownload").write_text("x\n")
        (lake / "tmp.tmp").write_text("x\n")
        (lake / "link.csv").symlink_to(tmp_path / "loopline.yaml")
        written = time.monotonic() - started
        deadline = time.monotonic() + 60
        while _count(db) < FILES and time.monotonic() < deadline:
            time.sleep(0.1)
        # A rewrite with identical bytes is not a new event.
        (lake / "day-3/batch-0003.csv").write_text("x,y,target\n3,3,1\n")
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert written < 30, f"writing took {written:.1f}s"
    assert _count(db) == FILES

    recorder = Recorder()
    now = utcnow()
    assert relay_once(settings, db, recorder, now=now) == 0  # still inside debounce_seconds
    assert relay_once(settings, db, recorder, now=now + timedelta(seconds=31)) == 1
    assert len(recorder.intakes) == 1 and len(recorder.intakes[0]) == FILES

    prepared = prepare_run(settings, db, recorder.intakes[0])
    with db.session() as s:
        run = s.get(Run, prepared.run_id)
        assert run is not None and s.query(Run).count() == 1
        paths = sorted(f["path"] for f in run.classification["files"])
        workspace = Path(run.workspace)
    expected = sorted(f"data/raw/day-{i % 10}/batch-{i:04}.csv" for i in range(FILES))
    assert paths == expected and run.reason == f"{FILES} new data file(s)"
    assert (
        sorted(p.relative_to(workspace).as_posix() for p in (workspace / "data/raw").rglob("*.csv"))
        == sorted([*expected, "data/raw/base.csv"])  # the committed base data, then the batch
    )
    assert prepared.stages[0] == "validate_data"
