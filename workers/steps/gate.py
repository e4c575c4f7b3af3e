"""The ``evaluate`` stage: the candidate against absolute thresholds, and against the production
model evaluated on this run's own held-out data (champion-challenger).

Production's *recorded* metrics were measured on the data of its own run; after new data or a
changed split they are not comparable. So the project's evaluation runs again, in this run's
worktree, on a copy of the production artifact whose sha256 was checked against the registry:
``gate.compare`` (default: the command of the DVC stage that writes the metrics file) gets
``LOOPLINE_MODEL_PATH`` (the model to score) and ``LOOPLINE_METRICS_OUT`` (where to write).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipelines.gate import judge
from pipelines.project import ProjectConfig
from workers.steps import StepContext, StepError, StepResult
from workers.steps.commands import run_project
from workers.steps.ml import read_metrics, sha256_file
from workers.steps.release import ModelRef, production


class ArtifactMismatch(StepError):
    """The production artifact on disk is not the one the registry recorded."""


def compare_command(project: ProjectConfig, worktree: Path) -> tuple[str, Path] | None:
    """``gate.compare``, else the DVC stage whose metrics or outs hold the metrics file (command
    and working directory); ``None`` when neither exists."""
    if project.gate.compare:
        return project.gate.compare, worktree
    dvc_yaml = worktree / "dvc.yaml"
    if not dvc_yaml.is_file():
        return None
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError as exc:
        raise StepError(f"dvc.yaml cannot be read: {exc}") from exc
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        wdir = stage.get("wdir") or "."
        paths = [
            next(iter(entry)) if isinstance(entry, dict) else entry
            for entry in (stage.get("metrics") or []) + (stage.get("outs") or [])
        ]
        written = {(Path(wdir) / str(p)).as_posix().removeprefix("./") for p in paths}
        cmd = stage.get("cmd")
        if isinstance(cmd, list) and len(cmd) == 1:
            cmd = cmd[0]
        if project.metrics in written and isinstance(cmd, str):
            return cmd, worktree / wdir
    return None


def verified_copy(model: ModelRef, dest_dir: Path) -> Path:
    """Copy the artifact out of the registry, then check the copy: what is loaded is what was checked."""
    dest = dest_dir / f"{model.name}-v{model.version}{model.artifact_path.suffix}"
    try:
        shutil.copyfile(model.artifact_path, dest)
    except OSError as exc:
        raise ArtifactMismatch(
            f"production {model.name} v{model.version}: artifact {model.artifact_path} cannot be read ({exc})"
        ) from exc
    actual = sha256_file(dest)
    if actual != model.sha256:
        raise ArtifactMismatch(
            f"production {model.name} v{model.version}: artifact {model.artifact_path} has sha256 {actual}, "
            f"not the registered {model.sha256}; refusing to load it"
        )
    return dest


def production_on_this_data(ctx: StepContext, champion: ModelRef) -> tuple[dict[str, float], str]:
    """Production's metrics on this run's held-out data, and how they were obtained."""
    found = compare_command(ctx.project, ctx.worktree)
    if found is None:
        ctx.say(
            "no gate.compare command and no DVC stage writes the metrics file: "
            "comparing with production's recorded metrics"
        )
        return {k: float(v) for k, v in champion.metrics.items() if isinstance(v, int | float)}, "recorded"
    command, cwd = found
    scratch = ctx.settings.home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f"gate-{ctx.run_id}-") as tmp:
        model_path = verified_copy(champion, Path(tmp))
        ctx.say(
            f"evaluating production {champion.name} v{champion.version} (sha256 {champion.sha256[:12]}…, "
            "verified) on this run's held-out data"
        )
        out = Path(tmp) / "production-metrics.json"
        code = run_project(
            ctx,
            command,
            cwd=cwd,
            env={"LOOPLINE_MODEL_PATH": str(model_path), "LOOPLINE_METRICS_OUT": str(out)},
            write=(Path(tmp),),
        )
        if code != 0:
            raise StepError(f"scoring production v{champion.version} on this run's data failed (exit {code})")
        return read_metrics(out), "same_data"


def _table(candidate: dict[str, float], champion: dict[str, float] | None) -> str:
    rows = [f"  {'metric':<24} {'candidate':>10} {'production':>11} {'delta':>9}"]
    for key in sorted(candidate.keys() | (champion or {}).keys()):
        cand, prod = candidate.get(key), (champion or {}).get(key)
        delta = f"{cand - prod:+9.4f}" if cand is not None and prod is not None else f"{'':>9}"
        rows.append(
            f"  {key:<24} {'' if cand is None else f'{cand:.4f}':>10} "
            f"{'' if prod is None else f'{prod:.4f}':>11} {delta}"
        )
    return "\n".join(rows) + "\n"


def evaluate(ctx: StepContext) -> StepResult:
    gate = ctx.project.gate
    candidate = read_metrics(ctx.worktree / ctx.project.metrics)
    champion = production(ctx.settings, ctx.db, ctx.project.model_name)
    detail: dict[str, Any] = {"production": None, "production_version": None}
    champion_metrics: dict[str, float] | None = None
    against = "production"
    if champion is not None:
        detail["production_version"] = champion.version
        detail["production"] = {"version": champion.version, "sha256": champion.sha256}
        if gate.max_drop_vs_production is not None:
            try:
                champion_metrics, source = production_on_this_data(ctx, champion)
            except ArtifactMismatch as exc:
                ctx.say(f"gate: failed: {exc}")
                detail.update(passed=False, metric=gate.metric, metrics=candidate, checks=[])
                detail["verdict"] = f"failed: {exc}"
                return StepResult(status="gate_failed", exit_code=1, detail=detail)
            detail["production"].update(source=source, metrics=champion_metrics)
            against = f"production v{champion.version}" + (
                " on the same data" if source == "same_data" else " (recorded)"
            )
    result = judge(gate, candidate, champion_metrics, against=against)
    if champion is None:
        result["verdict"] += " (no production model yet: the absolute thresholds alone decide)"
    elif champion_metrics is None:
        result["verdict"] += f" (not compared with production v{champion.version}: no max_drop_vs_production)"
    detail.update(result, metrics=candidate)
    detail["thresholds"] = {
        "bounds": [{"metric": m, "min": b.min, "max": b.max} for m, b in gate.bounds()],
        "max_drop_vs_production": gate.max_drop_vs_production,
    }
    ctx.log.write(_table(candidate, champion_metrics).encode())
    ctx.say(f"gate: {result['verdict']}")
    ctx.log.write((json.dumps(detail, indent=2) + "\n").encode())
    return StepResult(
        status="succeeded" if result["passed"] else "gate_failed",
        exit_code=0 if result["passed"] else 1,
        detail=detail,
    )
