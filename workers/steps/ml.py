"""Continuous-training stages: DVC retraining, the evaluation gate, model registration."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pipelines.config import GateConfig
from store import aliases
from store.models import ModelVersion, Run
from workers.process import run_logged
from workers.steps import StepContext, StepError, StepResult
from workers.steps.release import production


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
    code = run_logged(
        ctx.project.stages["retrain"],
        cwd=ctx.worktree,
        log=ctx.log,
        timeout=ctx.settings.stage_timeout,
        env=dvc_env(ctx),
    )
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


def judge(
    gate: GateConfig, metrics: dict[str, float], production_metrics: dict[str, Any] | None
) -> dict[str, Any]:
    """Compare a candidate's metrics with the gate; returns every number compared and a verdict."""
    value = metrics.get(gate.metric)
    checks: list[dict[str, Any]] = []
    if value is None:
        return {
            "passed": False,
            "metric": gate.metric,
            "checks": checks,
            "verdict": f"metric {gate.metric!r} is missing from the metrics file",
        }
    if gate.min is not None:
        checks.append({"check": "min", "value": value, "threshold": gate.min, "passed": value >= gate.min})
    prod_value = (production_metrics or {}).get(gate.metric)
    if gate.max_drop_vs_production is not None and prod_value is not None:
        floor = float(prod_value) - gate.max_drop_vs_production
        checks.append(
            {
                "check": "max_drop_vs_production",
                "value": value,
                "production": prod_value,
                "threshold": floor,
                "passed": value >= floor,
            }
        )
    failed = [c for c in checks if not c["passed"]]
    verdict = (
        f"{gate.metric}={value:.4f} passes " + (", ".join(c["check"] for c in checks) or "(no thresholds)")
        if not failed
        else "; ".join(
            f"{gate.metric}={value:.4f} below {c['check']} threshold {c['threshold']:.4f}" for c in failed
        )
    )
    return {"passed": not failed, "metric": gate.metric, "value": value, "checks": checks, "verdict": verdict}


def evaluate(ctx: StepContext) -> StepResult:
    metrics = read_metrics(ctx.worktree / ctx.project.metrics)
    current = production(ctx.db, ctx.project.model_name)
    result = judge(ctx.project.gate, metrics, current.metrics if current else None)
    result["metrics"] = metrics
    result["production_version"] = current.version if current else None
    ctx.say(f"gate: {result['verdict']}")
    ctx.log.write((json.dumps(result, indent=2) + "\n").encode())
    return StepResult(
        status="succeeded" if result["passed"] else "gate_failed",
        exit_code=0 if result["passed"] else 1,
        detail=result,
    )


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


def register(ctx: StepContext) -> StepResult:
    source = ctx.worktree / ctx.project.artifact
    if not source.is_file():
        raise StepError(f"artifact {ctx.project.artifact} does not exist")
    digest = sha256_file(source)
    data_version, params = lineage_inputs(ctx.worktree)
    metrics = read_metrics(ctx.worktree / ctx.project.metrics)
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
        }
    )
