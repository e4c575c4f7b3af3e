"""Continuous-training stages: DVC retraining and model registration (the gate: ``gate.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from pipelines import ledger
from pipelines import profile as profiles
from store import aliases, datasets, deliveries, registry, runs
from store.blobs import hash_file
from workers import artifacts
from workers.datasets import blobs
from workers.projects import mirror
from workers.steps import StepContext, StepError, StepResult
from workers.steps.commands import run_project
from workers.steps.data import read_tables
from workers.tables import count_rows, is_table


def dvc_env(ctx: StepContext) -> dict[str, str]:
    # DVC keeps per-checkout state under /var/tmp by default; keep it in LOOPLINE_HOME instead.
    return {"DVC_SITE_CACHE_DIR": str(ctx.settings.home / "dvc-site"), "DVC_NO_ANALYTICS": "1"}


def retrain(ctx: StepContext) -> StepResult:
    """``dvc repro`` with a cache shared by every run of the repository, so unchanged stages
    are restored from DVC's run-cache instead of recomputed."""
    cache = ctx.settings.home / "dvc-cache" / ctx.repo.name
    cache.mkdir(parents=True, exist_ok=True)
    dvc_dir = ctx.worktree / ".dvc"
    if dvc_dir.is_dir():
        (dvc_dir / "config.local").write_text(f"[cache]\n    dir = {cache}\n")
    env = dvc_env(ctx)
    site = Path(env["DVC_SITE_CACHE_DIR"])
    site.mkdir(parents=True, exist_ok=True)
    code = run_project(ctx, ctx.project.stages["retrain"], env=env, write=(cache, site))
    if code != 0:
        return StepResult(status="failed", exit_code=code)
    if not (ctx.worktree / ctx.project.artifact).is_file():
        raise StepError(f"retrain succeeded but produced no {ctx.project.artifact}")
    # evaluate and register may run on another training host: they find these in object storage
    outputs = artifacts.store_outputs(
        ctx.settings, ctx.worktree, (ctx.project.artifact, ctx.project.metrics, "dvc.lock")
    )
    return StepResult(exit_code=code, detail={"outputs": outputs})


def read_metrics(path: Path) -> dict[str, float]:
    """A DVC metrics file (JSON or YAML), flattened to ``a.b`` keys with numeric values."""
    if not path.is_file():
        raise StepError(f"metrics file {path.name} was not produced")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StepError(f"metrics file {path.name} is not JSON/YAML: {exc}") from exc
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("", raw)
    return flat


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage_inputs(worktree: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Data version (md5 of every DVC dependency and output) and params, from ``dvc.lock``."""
    lock_path = worktree / "dvc.lock"
    data: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if lock_path.is_file():
        lock = yaml.safe_load(lock_path.read_text()) or {}
        for stage_name, stage in (lock.get("stages") or {}).items():
            for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
                if "md5" in entry:
                    data[entry["path"]] = entry["md5"]
            for file_params in (stage.get("params") or {}).values():
                params.update(file_params)
            data.setdefault("_stages", []).append(stage_name)
    elif (worktree / "params.yaml").is_file():
        params = yaml.safe_load((worktree / "params.yaml").read_text()) or {}
    return data, params


def training_data(ctx: StepContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's training data for the lineage: its dataset version, that version's manifest
    sha256, and every file under ``data.into`` (the commit's own and the landed ones), with the
    profile of its tables for ``validate_data`` to check later data against."""
    with ctx.db.session() as s:
        run = runs.get(s, ctx.run_id)
        number = run.dataset_version if run else None
    manifest, manifest_sha = datasets.manifest(ctx.db, ctx.repo.name, number)
    landed = {e["path"]: e for e in manifest}
    into = ctx.worktree / ctx.project.data_into
    files: list[dict[str, Any]] = []
    paths = sorted(p for p in into.rglob("*") if p.is_file()) if into.is_dir() else []
    for path in paths:
        rel = path.relative_to(into).as_posix()
        entry = landed.get(rel)
        if entry is not None:
            files.append({k: entry.get(k) for k in ("path", "sha256", "size", "rows", "source", "landed_at")})
            continue
        blob = hash_file(path)
        files.append(
            {
                "path": rel,
                "sha256": blob.sha256,
                "size": blob.size,
                "rows": count_rows(path),
                "source": "commit",
            }
        )
    tables, _problems = read_tables([p for p in paths if is_table(p)], into)
    profile = profiles.profile(profiles.merge(tables)) if tables else None
    dataset = {
        "repository": ctx.repo.name,
        "version": number,
        "manifest_sha256": manifest_sha,
        "into": ctx.project.data_into,
        "files": files,
        "files_sha256": ledger.manifest_sha256(files),
    }
    return dataset, profile


def _gate_and_delivery(ctx: StepContext) -> tuple[dict[str, Any] | None, str | None]:
    """This run's gate verdict (refusing a candidate that did not pass) and its first delivery."""
    with ctx.db.session() as s:
        evaluate = runs.stage_of(s, ctx.run_id, "evaluate")
        delivery = deliveries.first_of_run(s, ctx.run_id)
        detail = evaluate.detail if evaluate else None
        refused = evaluate is not None and not (
            evaluate.status == "succeeded" and (detail or {}).get("passed")
        )
    if refused:
        raise StepError("the evaluation gate did not pass: the candidate is not registered")
    gate = (
        {k: detail.get(k) for k in ("passed", "verdict", "metric", "value", "production_version", "checks")}
        if detail
        else None
    )
    return gate, delivery


def register(ctx: StepContext) -> StepResult:
    if (earlier := _registered(ctx)) is not None:  # by an attempt whose worker died: never twice
        return earlier
    source = ctx.worktree / ctx.project.artifact
    if not source.is_file():
        raise StepError(f"artifact {ctx.project.artifact} does not exist")
    gate, delivery_id = _gate_and_delivery(ctx)
    digest = sha256_file(source)
    data_version, params = lineage_inputs(ctx.worktree)
    dataset, profile = training_data(ctx)
    metrics = read_metrics(ctx.worktree / ctx.project.metrics)
    message = mirror(ctx.settings, ctx.repo).message(ctx.commit).strip() if ctx.commit else ""
    name = ctx.project.model_name
    stored = blobs(ctx.settings).put_file(source)  # every host fetches it from there
    if stored.sha256 != digest:
        raise StepError("artifact changed while it was copied into the registry")
    where = artifacts.location(ctx.settings, digest, source.name)
    version = registry.register(
        ctx.db,
        name,
        ctx.run_id,
        repository=ctx.repo.name,
        commit=ctx.commit,
        ref=ctx.ref,
        branch=ctx.ref.removeprefix("refs/heads/") if ctx.ref and ctx.ref.startswith("refs/heads/") else None,
        commit_message=message[:2000] or None,
        delivery_id=delivery_id,
        gate=gate,
        data_version=data_version,
        params=params,
        metrics=metrics,
        artifact_path=where,
        sha256=digest,
        dataset=dataset,
        profile=profile,
    )
    if version is None:
        raise StepError("could not allocate a model version")
    ctx.say(
        f"registered {name} v{version} sha256={digest} on dataset version {dataset['version']}"
        f" ({len(dataset['files'])} file(s), manifest {dataset['manifest_sha256'][:12]})"
    )
    aliases.set_alias(ctx.db, name, "candidate", version, actor=f"run:{ctx.run_id}", reason="registered")
    return StepResult(
        detail={
            "model": name,
            "version": version,
            "sha256": digest,
            "data_version": data_version,
            "dataset_version": dataset["version"],
            "manifest_sha256": dataset["manifest_sha256"],
            "params": params,
            "gate": gate["verdict"] if gate else None,
        }
    )


def _registered(ctx: StepContext) -> StepResult | None:
    """What this run registered in an earlier attempt, if it did (its alias set again)."""
    with ctx.db.session() as s:
        mv = registry.of_run(s, ctx.run_id)
    if mv is None:
        return None
    ctx.say(f"{mv.name} v{mv.version} was registered by an earlier attempt of this stage")
    aliases.set_alias(
        ctx.db, mv.name, "candidate", mv.version, actor=f"run:{ctx.run_id}", reason="registered"
    )
    return StepResult(detail={"model": mv.name, "version": mv.version, "sha256": mv.sha256})
