"""Rebuild a registered model version from its lineage alone and compare.

A fresh worktree at the version's commit, its dataset version materialized into ``data.into``
(checked file by file against the lineage), the project's retrain command with an empty DVC
cache (so nothing is restored from an earlier run: everything is recomputed), then the artifact's
sha256 and the metrics compared with the registry's.

The rebuild's log is a file on this host while it runs, then one object in object storage
(:class:`RebuildLog`): the web process serves it from there, and the trainer keeps no logs.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from config.settings import Settings
from pipelines.errors import LooplineError
from store import reproductions, stagelogs
from store.blobs import BlobError, hash_file
from store.db import Database
from store.registry import model_version
from workers import datasets as ledger
from workers.environments import box_for
from workers.heartbeat import beating
from workers.locks import mirror_lock
from workers.process import kill_group, reporting, run_logged, wait_gone
from workers.projects import mirror, project_in
from workers.steps.ml import read_metrics

log = logging.getLogger(__name__)


class ReproduceError(LooplineError, RuntimeError):
    """The version cannot be rebuilt (unknown, or its lineage lacks what a rebuild needs)."""


class RebuildLog:
    """A rebuild's log: written to a file on this host while it runs, then stored as one object
    (:func:`store.stagelogs.reproduction`) and the file removed. Hosts share no disk, so the web
    process serves it from the object storage; and the trainer's scratch does not fill with logs."""

    def __init__(self, settings: Settings, label: int | str) -> None:
        self.settings = settings
        self.key = stagelogs.reproduction(label)
        self.path = settings.home / "logs" / "reproduce" / self.key.rpartition("/")[2]
        #: The object's name once stored (None: not yet, or the object storage refused it).
        self.stored: str | None = None
        #: What the store keeps of it (:data:`store.reproductions.LOG_TAIL`).
        self.tail = ""

    @contextmanager
    def writing(self) -> Iterator[IO[bytes]]:
        """The file to write; stored when the block ends, also by an exception (said last)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.path.open("wb") as out:
                try:
                    yield out
                except Exception as exc:
                    out.write(f"[loopline] stopped: {exc}\n".encode(errors="replace"))
                    raise
        finally:
            self.keep()

    def keep(self, last: str = "") -> None:
        """Store the file (and ``last``) as the object and remove it. If the object storage
        refuses it the file stays, and a warning says where."""
        try:
            data = self.path.read_bytes() + last.encode()
        except FileNotFoundError:  # never written on this host
            return
        self.tail = data[-reproductions.LOG_TAIL :].decode("utf-8", errors="replace")
        try:
            ledger.blobs(self.settings).put_named(self.key, data)
        except (BlobError, OSError) as exc:
            log.warning("the rebuild log stays at %s: the object storage refused it: %s", self.path, exc)
            return
        self.stored = self.key
        self.path.unlink(missing_ok=True)


def reproduce(
    settings: Settings,
    db: Database,
    name: str,
    version: int,
    say: Callable[[str], None] = lambda _: None,
    work: Path | None = None,
    rebuild_log: RebuildLog | None = None,
) -> dict[str, Any]:
    """Rebuild ``name`` v``version`` (in ``work``, else a new directory; its log in
    ``rebuild_log``, else one named after ``work``); the report says what matched, and names the
    log's object (``log_file``: where it stayed, when the object storage refused it)."""
    with db.session() as s:
        mv = model_version(s, name, version)
        if mv is None:
            raise ReproduceError(f"no version {version} of model {name!r}")
        commit, repository, expected_sha, expected_metrics = mv.commit, mv.repository, mv.sha256, mv.metrics
        dataset, params = dict(mv.dataset or {}), dict(mv.params or {})
    repo = settings.repo(repository)
    if repo is None:
        raise ReproduceError(f"repository {repository!r} is no longer registered")
    if not dataset:
        raise ReproduceError(f"{name} v{version} was registered before the data ledger: no dataset version")
    started = time.monotonic()
    work = work or settings.home / "reproduce" / f"{name}-{version}-{time.time_ns()}"
    rebuild_log = rebuild_log or RebuildLog(settings, work.name)
    with rebuild_log.writing() as out:

        def note(line: str) -> None:
            say(line)
            out.write(f"[loopline] {line}\n".encode())

        mirror_ = mirror(settings, repo)
        with mirror_lock(settings.home, repo.name):
            mirror_.update()
        mirror_.add_worktree(work, commit)
        try:
            project = project_in(work)
            into = work / project.data_into
            note(f"worktree at {commit[:12]}, dataset version {dataset['version']}")
            ledger.materialize(settings, db, repository, dataset["version"], into)
            files = sorted(
                (p.relative_to(into).as_posix(), hash_file(p).sha256) for p in into.rglob("*") if p.is_file()
            )
            recorded = sorted((f["path"], f["sha256"]) for f in dataset.get("files", []))
            note(f"retraining: {project.stages['retrain']} (empty DVC cache)")
            out.flush()
            code = run_logged(  # in the project's environment and sandbox, as retrain runs
                project.stages["retrain"],
                cwd=work,
                log=out,
                timeout=settings.stage_timeout,
                env={"DVC_SITE_CACHE_DIR": str(work / ".dvc-site"), "DVC_NO_ANALYTICS": "1"},
                box=box_for(settings.home, project, work, out),
            )
            artifact = work / project.artifact
            sha = hash_file(artifact).sha256 if code == 0 and artifact.is_file() else None
            metrics = read_metrics(work / project.metrics) if code == 0 else {}
        finally:
            mirror_.remove_worktree(work)
            shutil.rmtree(work, ignore_errors=True)
    same_metrics = expected_metrics == metrics
    report = {
        "model": name,
        "version": version,
        "commit": commit,
        "dataset_version": dataset["version"],
        "manifest_sha256": dataset.get("manifest_sha256"),
        "params": params,
        "data_matches": files == recorded,
        "exit_code": code,
        "sha256": sha,
        "expected_sha256": expected_sha,
        "sha256_matches": sha == expected_sha,
        "metrics": metrics,
        "expected_metrics": expected_metrics,
        "metrics_match": same_metrics,
        "log": rebuild_log.stored,
        "seconds": round(time.monotonic() - started, 2),
    }
    if rebuild_log.stored is None:
        report["log_file"] = str(rebuild_log.path)
    report["reproduced"] = bool(report["data_matches"] and report["sha256_matches"] and same_metrics)
    return report


def format_report(report: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "same" if ok else "DIFFERENT"

    return "\n".join(
        [
            f"{report['model']} v{report['version']}: "
            + ("reproduced" if report["reproduced"] else "NOT reproduced")
            + f" in {report['seconds']:.1f}s",
            f"  commit      {report['commit']}",
            f"  dataset     version {report['dataset_version']}"
            f" (manifest {str(report['manifest_sha256'])[:16]}…): files {mark(report['data_matches'])}",
            f"  artifact    sha256 {report['sha256']}: {mark(report['sha256_matches'])}",
            f"  metrics     {mark(report['metrics_match'])}"
            + ("" if report["metrics_match"] else f": {report['metrics']} vs {report['expected_metrics']}"),
            f"  log         {report['log']} in the object storage"
            if report["log"]
            else f"  log         {report.get('log_file')} (the object storage refused it)",
        ]
    )


def run_requested(settings: Settings, db: Database, reproduction_id: int, task_id: str | None = None) -> str:
    """Run a stored reproduction (``POST …/reproduce``) with :func:`reproduce`, the function the
    CLI calls, under a lease its heartbeat renews; returns its final status, or why this message
    has nothing to do (:data:`store.reproductions.STALE`, …)."""
    claim = reproductions.start(db, reproduction_id, task_id, settings.lease_seconds)
    if isinstance(claim, reproductions.Ended):  # delivered again: the worker running it died
        end_dead(settings, claim)
        return "failed"
    if isinstance(claim, str):
        return claim
    report: dict[str, Any] | None = None
    rebuild_log = RebuildLog(settings, claim.id)
    with (
        beating(settings.lease_seconds / 3, lambda: reproductions.renew(db, claim, settings.lease_seconds)),
        reporting(lambda pgid: reproductions.record_pgid(db, claim, pgid)),
    ):
        try:
            work = workdir(settings, claim)  # its log, like its record, by the reproduction's id
            report = reproduce(settings, db, claim.name, claim.version, work=work, rebuild_log=rebuild_log)
            status, reason = verdict(report)
        except LooplineError as exc:  # ReproduceError, a git or config error: one line
            status, reason = "failed", str(exc)
        except Exception as exc:  # recorded too, so it ends: a reproduction never stays running
            log.exception("reproduction %d of %s v%d", claim.id, claim.name, claim.version)
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
    result = report and result_of(report)  # the store keeps the log's tail; the object, all of it
    reproductions.finish(db, claim, status, reason=reason, result=result, log=rebuild_log.tail)
    return status


def workdir(settings: Settings, rep: reproductions.Claim | reproductions.Ended) -> Path:
    """Where a requested reproduction rebuilds: one directory per reproduction, so whoever ends
    it after its worker died knows what to remove."""
    return settings.home / "reproduce" / f"{rep.name}-{rep.version}-r{rep.id}"


def end_dead(settings: Settings, ended: reproductions.Ended) -> None:
    """After its worker died (the store has it failed): kill the command it left running and
    remove its worktree, when that was on this host."""
    log.warning("reproduction %d of %s v%d: its worker died; failed", ended.id, ended.name, ended.version)
    if ended.orphan is not None and ended.orphan.host == socket.gethostname():
        kill_group(ended.orphan.pgid, signal.SIGKILL)
        wait_gone(ended.orphan.pgid)
    shutil.rmtree(workdir(settings, ended), ignore_errors=True)  # git prunes its entry next time
    RebuildLog(settings, ended.id).keep("[loopline] its worker died: the reproduction failed\n")


def verdict(report: dict[str, Any]) -> tuple[str, str]:
    """``succeeded`` when the rebuild matched in every respect, else ``failed`` with the first
    difference, in one line."""
    if report["reproduced"]:
        return "succeeded", f"artifact sha256 {report['sha256']} and metrics match"
    if report["exit_code"] != 0:
        return "failed", f"the retrain command exited {report['exit_code']}"
    if not report["data_matches"]:
        return "failed", f"the files of dataset version {report['dataset_version']} differ from the lineage's"
    if not report["sha256_matches"]:
        return "failed", f"artifact sha256 {report['sha256']}, expected {report['expected_sha256']}"
    return "failed", f"metrics {report['metrics']}, expected {report['expected_metrics']}"


def result_of(report: dict[str, Any]) -> dict[str, Any]:
    """What a reproduction record keeps: whether it matched, and expected vs got."""
    return {
        "matches": report["reproduced"],
        "commit": report["commit"],
        "dataset_version": report["dataset_version"],
        "manifest_sha256": report["manifest_sha256"],
        "params": report["params"],
        "data_matches": report["data_matches"],
        "exit_code": report["exit_code"],
        "sha256": {
            "expected": report["expected_sha256"],
            "got": report["sha256"],
            "matches": report["sha256_matches"],
        },
        "metrics": {
            "expected": report["expected_metrics"],
            "got": report["metrics"],
            "matches": report["metrics_match"],
        },
        "seconds": report["seconds"],
        "log": report["log"],
    }
