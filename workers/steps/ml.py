"""Continuous-training stages: DVC retraining and model registration (the gate: ``gate.py``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from store import aliases
from store.models import Delivery, ModelVersion, Run, Stage
from workers.projects import mirror
from workers.steps import StepContext, StepError, StepResult
from workers.steps.commands import run_project


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
    if code == 0 and not (ctx.worktree / ctx.project.artifact).is_file():
        raise StepError(f"retrain succeeded but produced no {ctx.project.artifact}")
    return StepResult(status="succeeded" if code == 0 else "failed", exit_code=code)


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


def _gate_and_delivery(ctx: StepContext) -> tuple[dict[str, Any] | None, str | None]:
    """This run's gate verdict (refusing a candidate that did not pass) and its first delivery."""
    with ctx.db.session() as s:
        evaluate = s.scalars(
            select(Stage).where(Stage.run_id == ctx.run_id, Stage.name == "evaluate")
        ).one_or_none()
        delivery = s.scalars(
            select(Delivery.id).where(Delivery.run_id == ctx.run_id).order_by(Delivery.received_at).limit(1)
        ).one_or_none()
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
    metrics = read_metrics(ctx.worktree / ctx.project.metrics)
    message = mirror(ctx.settings, ctx.repo).message(ctx.commit).strip() if ctx.commit else ""
    name = ctx.project.model_name
    for _attempt in range(5):  # two runs registering at once: the unique (name, version) decides
        with ctx.db.session() as s:
            version = (
                s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)) or 0
            ) + 1
        dest = ctx.settings.home / "artifacts" / name / str(version) / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        if sha256_file(dest) != digest:
            raise StepError("artifact changed while it was copied into the registry")
        try:
            with ctx.db.session() as s:
                s.add(
                    ModelVersion(
                        name=name,
                        version=version,
                        run_id=ctx.run_id,
                        repository=ctx.repo.name,
                        commit=ctx.commit,
                        ref=ctx.ref,
                        branch=ctx.ref.removeprefix("refs/heads/")
                        if ctx.ref and ctx.ref.startswith("refs/heads/")
                        else None,
                        commit_message=message[:2000] or None,
                        delivery_id=delivery_id,
                        gate=gate,
                        data_version=data_version,
                        params=params,
                        metrics=metrics,
                        artifact_path=str(dest),
                        sha256=digest,
                    )
                )
                run = s.get(Run, ctx.run_id)
                assert run is not None
                run.model_version = version
            break
        except IntegrityError:
            continue
    else:
        raise StepError("could not allocate a model version")
    ctx.say(f"registered {name} v{version} sha256={digest}")
    aliases.set_alias(ctx.db, name, "candidate", version, actor=f"run:{ctx.run_id}", reason="registered")
    return StepResult(
        detail={
            "model": name,
            "version": version,
            "sha256": digest,
            "data_version": data_version,
            "params": params,
            "gate": gate["verdict"] if gate else None,
        }
    )


def _registered(ctx: StepContext) -> StepResult | None:
    """What this run registered in an earlier attempt, if it did (its alias set again)."""
    with ctx.db.session() as s:
        mv = s.scalars(select(ModelVersion).where(ModelVersion.run_id == ctx.run_id)).first()
    if mv is None:
        return None
    ctx.say(f"{mv.name} v{mv.version} was registered by an earlier attempt of this stage")
    aliases.set_alias(
        ctx.db, mv.name, "candidate", mv.version, actor=f"run:{ctx.run_id}", reason="registered"
    )
    return StepResult(detail={"model": mv.name, "version": mv.version, "sha256": mv.sha256})
