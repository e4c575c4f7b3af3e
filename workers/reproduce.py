"""Rebuild a registered model version from its lineage alone and compare.

A fresh worktree at the version's commit, its dataset version materialized into ``data.into``
(checked file by file against the lineage), the project's retrain command with an empty DVC
cache (so nothing is restored from an earlier run: everything is recomputed), then the artifact's
sha256 and the metrics compared with the registry's.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from config.settings import Settings
from pipelines.errors import LooplineError
from store.blobs import hash_file
from store.db import Database
from store.registry import model_version
from workers import datasets as ledger
from workers.environments import box_for
from workers.process import run_logged
from workers.projects import mirror, project_in
from workers.steps.ml import read_metrics


class ReproduceError(LooplineError, RuntimeError):
    """The version cannot be rebuilt (unknown, or its lineage lacks what a rebuild needs)."""


def reproduce(
    settings: Settings, db: Database, name: str, version: int, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Rebuild ``name`` v``version``; the report says what matched."""
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
    work = settings.home / "reproduce" / f"{name}-{version}-{time.time_ns()}"
    mirror_ = mirror(settings, repo)
    mirror_.update()
    mirror_.add_worktree(work, commit)
    log_path = settings.home / "logs" / "reproduce" / f"{work.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        project = project_in(work)
        into = work / project.data_into
        say(f"worktree at {commit[:12]}, dataset version {dataset['version']}")
        ledger.materialize(settings, db, repository, dataset["version"], into)
        files = sorted(
            (p.relative_to(into).as_posix(), hash_file(p).sha256) for p in into.rglob("*") if p.is_file()
        )
        recorded = sorted((f["path"], f["sha256"]) for f in dataset.get("files", []))
        say(f"retraining: {project.stages['retrain']} (empty DVC cache)")
        with log_path.open("wb") as log:  # in the project's environment and sandbox, as retrain runs
            code = run_logged(
                project.stages["retrain"],
                cwd=work,
                log=log,
                timeout=settings.stage_timeout,
                env={"DVC_SITE_CACHE_DIR": str(work / ".dvc-site"), "DVC_NO_ANALYTICS": "1"},
                box=box_for(settings.home, project, work, log),
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
        "log": str(log_path),
        "seconds": round(time.monotonic() - started, 2),
    }
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
            f"  log         {report['log']}",
        ]
    )
