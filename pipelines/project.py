"""Typed configuration of a project: its own ``loopline.yml``, every key optional.

Parsed from plain dicts (already loaded YAML), so every rule is checked in one place and errors
name the file, the key and the problem (:class:`pipelines.config.ConfigError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.classify import KINDS, Rule, glob_regex
from pipelines.config import ConfigError, mapping, number, string
from pipelines.environment import EnvironmentConfig, SandboxConfig, parse_environment, parse_sandbox
from pipelines.rules import default_rules


@dataclass(frozen=True)
class ApprovalConfig:
    """``stages.deploy.approval``: ``required``, or ``{required, branches, expires_after}``."""

    required: bool = False
    branches: tuple[str, ...] = ()  # empty: every deploy branch
    expires_after: float | None = None  # seconds a run may wait; None: forever

    def applies_to(self, branch: str | None) -> bool:
        return self.required and (not self.branches or branch in self.branches)


@dataclass(frozen=True)
class DeployConfig:
    target: str = "local"
    approval: ApprovalConfig = field(default_factory=ApprovalConfig)
    command: str | None = None
    health_path: str = "/healthz"
    #: Share of the gateway's traffic the new release gets on trial; 0 promotes it at once.
    canary_percent: int = 0
    #: How long the trial watches the canary before its verdict.
    canary_window_seconds: float = 30.0
    #: Roll back when more of the canary's requests than this fail (5xx or no answer) …
    max_error_rate: float = 0.05
    #: … or when its p99 latency (through the gateway) is above this …
    max_p99_ms: float = 500.0
    #: … or when fewer requests than this reached it in the window: not enough to judge.
    min_requests: int = 20


@dataclass(frozen=True)
class Threshold:
    """Absolute bounds for one metric: the candidate must be ``>= min`` and ``<= max``."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class GateConfig:
    """The evaluation gate. ``metric`` (higher is better) is the one compared with production;
    ``thresholds`` bound any metric of the metrics file, ``metric`` included (``min``/``max``)."""

    metric: str = "accuracy"
    min: float | None = None
    max_drop_vs_production: float | None = None
    thresholds: tuple[tuple[str, Threshold], ...] = ()
    #: Evaluates the production artifact on this run's held-out data (``LOOPLINE_MODEL_PATH`` in,
    #: ``LOOPLINE_METRICS_OUT`` out); ``None``: the DVC stage that writes the metrics file.
    compare: str | None = None

    def bounds(self) -> tuple[tuple[str, Threshold], ...]:
        """Every absolute bound, the single-metric ``min`` first."""
        head = ((self.metric, Threshold(min=self.min)),) if self.min is not None else ()
        return head + self.thresholds


@dataclass(frozen=True)
class ReleaseConfig:
    """Which tags release: a tag matching ``tags`` on a deploy branch's commit re-deploys the
    model registered for that commit, without retraining."""

    tags: tuple[str, ...] = ("**",)  # globs over the tag name; the default: any tag

    def releases(self, tag: str) -> bool:
        return any(glob_regex(pattern).match(tag) for pattern in self.tags)


@dataclass(frozen=True)
class ProjectConfig:
    """A project's own ``loopline.yml``; every key is optional."""

    model_name: str = "model"
    artifact: str = "models/model.pkl"
    metrics: str = "metrics.json"
    rules: tuple[Rule, ...] = ()  # in order; first match wins
    stages: dict[str, str] = field(default_factory=dict)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    data_into: str = "data/raw"
    debounce_seconds: float = 30.0
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


DEFAULT_STAGES = {
    "unit_tests": "pytest -q tests/unit",
    "retrain": "dvc repro",
    "integration_tests": "pytest -q tests/integration",
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")

_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any, source: str, key: str) -> float | None:
    """Seconds from ``90``, ``90s``, ``30m``, ``24h`` or ``2d``."""
    if value is None:
        return None
    match = _DURATION_RE.match(str(value)) if not isinstance(value, bool) else None
    if match is None or float(match[1]) <= 0:
        raise ConfigError(source, key, "expected a positive duration such as 90s, 30m, 24h or 2d")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _threshold(value: Any, source: str, key: str) -> Threshold:
    bounds = mapping(value, source, key)
    unknown = set(bounds) - {"min", "max"}
    if unknown or not bounds:
        raise ConfigError(source, key, "expected {min: number, max: number} (either or both)")
    low = number(bounds.get("min"), source, f"{key}.min")
    high = number(bounds.get("max"), source, f"{key}.max")
    if low is not None and high is not None and low > high:
        raise ConfigError(source, key, f"min {low} is above max {high}")
    return Threshold(min=low, max=high)


def _approval(value: Any, source: str) -> ApprovalConfig:
    key = "stages.deploy.approval"
    if value in (None, "none"):
        return ApprovalConfig()
    if value == "required":
        return ApprovalConfig(required=True)
    if not isinstance(value, dict):
        raise ConfigError(source, key, "must be 'none', 'required' or {required, branches, expires_after}")
    unknown = set(value) - {"required", "branches", "expires_after"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    required = value.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(source, f"{key}.required", "expected true or false")
    branches = value.get("branches", [])
    if not isinstance(branches, list) or not all(isinstance(b, str) and b for b in branches):
        raise ConfigError(source, f"{key}.branches", "expected a list of branch names")
    return ApprovalConfig(
        required=required,
        branches=tuple(branches),
        expires_after=_duration(value.get("expires_after"), source, f"{key}.expires_after"),
    )


def _gate(value: Any, source: str) -> GateConfig:
    gate = mapping(value, source, "gate")
    unknown = set(gate) - {"metric", "min", "max_drop_vs_production", "thresholds", "compare"}
    if unknown:
        raise ConfigError(source, f"gate.{sorted(unknown)[0]}", "unknown key")
    drop = number(gate.get("max_drop_vs_production"), source, "gate.max_drop_vs_production")
    if drop is not None and drop < 0:
        raise ConfigError(source, "gate.max_drop_vs_production", "expected a number >= 0")
    thresholds = mapping(gate.get("thresholds"), source, "gate.thresholds")
    return GateConfig(
        metric=string(gate.get("metric"), source, "gate.metric") or "accuracy",
        min=number(gate.get("min"), source, "gate.min"),
        max_drop_vs_production=drop,
        thresholds=tuple(
            (str(name), _threshold(bounds, source, f"gate.thresholds.{name}"))
            for name, bounds in thresholds.items()
        ),
        compare=string(gate.get("compare"), source, "gate.compare"),
    )


def _bounded(
    deploy: dict[str, Any], name: str, low: float, high: float, source: str, *, integer: bool = False
) -> float:
    """``stages.deploy.<name>``, checked to lie in [low, high]; absent: the default."""
    value, key = deploy.get(name), f"stages.deploy.{name}"
    if value is None:
        return float(getattr(DeployConfig, name))
    expected = (
        f"expected an integer from {low:.0f} to {high:.0f}" if integer else f"expected {low:g} to {high:g}"
    )
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(source, key, expected)
    checked = number(value, source, key)
    assert checked is not None
    if not low <= checked <= high:
        raise ConfigError(source, key, expected)
    return checked


def _relative_path(value: str, source: str, key: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(source, key, "must be a path inside the repository")
    return value


def _globs(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise ConfigError(source, key, "expected a list of glob patterns")
    return value


def _release(value: Any, source: str) -> ReleaseConfig:
    release = mapping(value, source, "release")
    unknown = set(release) - {"tags"}
    if unknown:
        raise ConfigError(source, f"release.{sorted(unknown)[0]}", "unknown key")
    if "tags" not in release:
        return ReleaseConfig()
    return ReleaseConfig(tags=tuple(_globs(release["tags"], source, "release.tags")))


def parse_project_config(
    raw: Any, source: str = "loopline.yml", *, dvc: Any = None, dvc_files: tuple[str, ...] = ()
) -> ProjectConfig:
    """Parse a project's ``loopline.yml`` (``raw`` is the loaded YAML, ``None`` if absent).

    :param dvc: the parsed ``dvc.yaml`` at the same commit, if any: without a ``classify:``
        section the rules are derived from it (:func:`pipelines.rules.dvc_rules`).
    :param dvc_files: the ``.dvc`` files at that commit (data tracked by DVC).
    """
    top = mapping(raw, source, "(top level)")
    unknown = set(top) - {"model", "classify", "stages", "gate", "data", "release", "environment", "sandbox"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown key")
    model = mapping(top.get("model"), source, "model")
    rules: list[Rule] = []
    classify = mapping(top.get("classify"), source, "classify")
    for kind, globs in classify.items():
        if kind not in KINDS:
            raise ConfigError(source, f"classify.{kind}", f"kind must be one of {', '.join(KINDS)}")
        key = f"classify.{kind}"
        rules.extend(Rule(kind, g, f"{key}[{i}]: {g}") for i, g in enumerate(_globs(globs, source, key)))
    stages_raw = mapping(top.get("stages"), source, "stages")
    stages = dict(DEFAULT_STAGES)
    deploy = DeployConfig()
    for name, value in stages_raw.items():
        if name == "deploy":
            d = mapping(value, source, "stages.deploy")
            target = d.get("target", "local")
            if target not in ("local", "command"):
                raise ConfigError(source, "stages.deploy.target", "must be 'local' or 'command'")
            deploy = DeployConfig(
                target=target,
                approval=_approval(d.get("approval"), source),
                command=string(d.get("command"), source, "stages.deploy.command"),
                health_path=string(d.get("health"), source, "stages.deploy.health") or "/healthz",
                canary_percent=int(_bounded(d, "canary_percent", 0, 100, source, integer=True)),
                canary_window_seconds=_bounded(d, "canary_window_seconds", 1, 3600, source),
                max_error_rate=_bounded(d, "max_error_rate", 0, 1, source),
                max_p99_ms=_bounded(d, "max_p99_ms", 1, 600_000, source),
                min_requests=int(_bounded(d, "min_requests", 0, 10**9, source, integer=True)),
            )
        elif name in ("unit_tests", "retrain", "integration_tests"):
            cmd = string(value, source, f"stages.{name}", required=True)
            assert cmd is not None
            stages[name] = cmd
        else:
            raise ConfigError(source, f"stages.{name}", "unknown stage")
    data = mapping(top.get("data"), source, "data")
    debounce = number(data.get("debounce_seconds"), source, "data.debounce_seconds")
    if debounce is not None and not 0 <= debounce <= 3600:
        raise ConfigError(source, "data.debounce_seconds", "expected 0 to 3600 seconds")
    return ProjectConfig(
        model_name=string(model.get("name"), source, "model.name") or "model",
        artifact=_relative_path(
            string(model.get("artifact"), source, "model.artifact") or "models/model.pkl",
            source,
            "model.artifact",
        ),
        metrics=_relative_path(
            string(model.get("metrics"), source, "model.metrics") or "metrics.json", source, "model.metrics"
        ),
        rules=tuple(rules) or default_rules(dvc, dvc_files),
        stages=stages,
        deploy=deploy,
        gate=_gate(top.get("gate"), source),
        data_into=_relative_path(
            string(data.get("into"), source, "data.into") or "data/raw", source, "data.into"
        ),
        debounce_seconds=30.0 if debounce is None else debounce,
        release=_release(top.get("release"), source),
        environment=parse_environment(top.get("environment"), source),
        sandbox=parse_sandbox(top.get("sandbox"), source),
    )
