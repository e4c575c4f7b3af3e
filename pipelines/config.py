"""Typed configuration: the server's registered repositories and a project's ``loopline.yml``.

Parsing takes plain dicts (already loaded YAML) so that every rule is checked in one
place and errors name the file, the key and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PROVIDERS = ("github", "gitlab", "gitea", "forgejo", "bitbucket", "git")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class DataLakeEntry:
    folder: str | None = None
    s3: dict[str, str] | None = None
    azure: dict[str, str] | None = None


@dataclass(frozen=True)
class RepoConfig:
    """One repository registered with the server (``loopline.yaml``)."""

    name: str
    provider: str
    match: str
    url: str
    secret_env: str | None = None
    branches: tuple[str, ...] = ("main",)
    data_lake: tuple[DataLakeEntry, ...] = ()

    @property
    def default_branch(self) -> str:
        return self.branches[0]


@dataclass(frozen=True)
class DeployConfig:
    target: str = "local"
    approval: str = "none"  # none | required
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
class GateConfig:
    metric: str = "accuracy"
    min: float | None = None
    max_drop_vs_production: float | None = None


@dataclass(frozen=True)
class ProjectConfig:
    """A project's own ``loopline.yml``; every key is optional."""

    model_name: str = "model"
    artifact: str = "models/model.pkl"
    metrics: str = "metrics.json"
    rules: tuple[tuple[str, str], ...] = ()  # (kind, glob) in order; first match wins
    stages: dict[str, str] = field(default_factory=dict)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    data_into: str = "data/raw"
    debounce_seconds: float = 30.0


KINDS = ("ignore", "data", "training_code", "app_code")
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("ignore", "docs/**"),
    ("ignore", "**/*.md"),
    ("ignore", "LICENSE*"),
    ("data", "data/**"),
    ("data", "**/*.dvc"),
    ("training_code", "dvc.yaml"),
    ("training_code", "params.yaml"),
    ("training_code", "src/train/**"),
    ("training_code", "train/**"),
    ("training_code", "loopline.yml"),
)
DEFAULT_STAGES = {
    "unit_tests": "pytest -q tests/unit",
    "retrain": "dvc repro",
    "integration_tests": "pytest -q tests/integration",
}


def _mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _string(value: Any, source: str, key: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ConfigError(source, key, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, "expected a non-empty string")
    return value


def _number(value: Any, source: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(source, key, "expected a number")
    return float(value)


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
    number = _number(value, source, key)
    assert number is not None
    if not low <= number <= high:
        raise ConfigError(source, key, expected)
    return number


def _relative_path(value: str, source: str, key: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(source, key, "must be a path inside the repository")
    return value


def parse_server_config(raw: Any, source: str = "loopline.yaml") -> tuple[RepoConfig, ...]:
    """Parse the server's repository registry."""
    top = _mapping(raw, source, "(top level)")
    repos = top.get("repositories", [])
    if not isinstance(repos, list):
        raise ConfigError(source, "repositories", "expected a list")
    result: list[RepoConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(repos):
        key = f"repositories[{i}]"
        entry = _mapping(item, source, key)
        name = _string(entry.get("name"), source, f"{key}.name", required=True)
        assert name is not None
        if not _NAME_RE.match(name):
            raise ConfigError(source, f"{key}.name", "use letters, digits, '.', '_' or '-'")
        if name in seen:
            raise ConfigError(source, f"{key}.name", f"duplicate repository name {name!r}")
        seen.add(name)
        provider = entry.get("provider", "git")
        if provider not in PROVIDERS:
            raise ConfigError(source, f"{key}.provider", f"must be one of {', '.join(PROVIDERS)}")
        url = _string(entry.get("url"), source, f"{key}.url", required=True)
        branches = entry.get("branches", ["main"])
        if not isinstance(branches, list) or not branches or not all(isinstance(b, str) for b in branches):
            raise ConfigError(source, f"{key}.branches", "expected a non-empty list of branch names")
        lakes = entry.get("data_lake", []) or []
        if not isinstance(lakes, list):
            raise ConfigError(source, f"{key}.data_lake", "expected a list")
        lake_entries = []
        for j, lake in enumerate(lakes):
            lake_map = _mapping(lake, source, f"{key}.data_lake[{j}]")
            unknown = set(lake_map) - {"folder", "s3", "azure"}
            if unknown or not lake_map:
                raise ConfigError(source, f"{key}.data_lake[{j}]", "expected one of folder, s3, azure")
            lake_entries.append(
                DataLakeEntry(
                    folder=lake_map.get("folder"), s3=lake_map.get("s3"), azure=lake_map.get("azure")
                )
            )
        result.append(
            RepoConfig(
                name=name,
                provider=provider,
                match=_string(entry.get("match"), source, f"{key}.match") or name,
                url=url or "",
                secret_env=_string(entry.get("secret_env"), source, f"{key}.secret_env"),
                branches=tuple(branches),
                data_lake=tuple(lake_entries),
            )
        )
    return tuple(result)


def parse_project_config(raw: Any, source: str = "loopline.yml") -> ProjectConfig:
    """Parse a project's ``loopline.yml`` (``raw`` is the loaded YAML, ``None`` if absent)."""
    top = _mapping(raw, source, "(top level)")
    unknown = set(top) - {"model", "classify", "stages", "gate", "data"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown key")
    model = _mapping(top.get("model"), source, "model")
    rules: list[tuple[str, str]] = []
    classify = _mapping(top.get("classify"), source, "classify")
    for kind, globs in classify.items():
        if kind not in KINDS:
            raise ConfigError(source, f"classify.{kind}", f"kind must be one of {', '.join(KINDS)}")
        if not isinstance(globs, list) or not all(isinstance(g, str) and g for g in globs):
            raise ConfigError(source, f"classify.{kind}", "expected a list of glob patterns")
        rules.extend((kind, g) for g in globs)
    stages_raw = _mapping(top.get("stages"), source, "stages")
    stages = dict(DEFAULT_STAGES)
    deploy = DeployConfig()
    for name, value in stages_raw.items():
        if name == "deploy":
            d = _mapping(value, source, "stages.deploy")
            target = d.get("target", "local")
            if target not in ("local", "command"):
                raise ConfigError(source, "stages.deploy.target", "must be 'local' or 'command'")
            approval = d.get("approval", "none")
            if approval not in ("none", "required"):
                raise ConfigError(source, "stages.deploy.approval", "must be 'none' or 'required'")
            deploy = DeployConfig(
                target=target,
                approval=approval,
                command=_string(d.get("command"), source, "stages.deploy.command"),
                health_path=_string(d.get("health"), source, "stages.deploy.health") or "/healthz",
                canary_percent=int(_bounded(d, "canary_percent", 0, 100, source, integer=True)),
                canary_window_seconds=_bounded(d, "canary_window_seconds", 1, 3600, source),
                max_error_rate=_bounded(d, "max_error_rate", 0, 1, source),
                max_p99_ms=_bounded(d, "max_p99_ms", 1, 600_000, source),
                min_requests=int(_bounded(d, "min_requests", 0, 10**9, source, integer=True)),
            )
        elif name in ("unit_tests", "retrain", "integration_tests"):
            cmd = _string(value, source, f"stages.{name}", required=True)
            assert cmd is not None
            stages[name] = cmd
        else:
            raise ConfigError(source, f"stages.{name}", "unknown stage")
    gate = _mapping(top.get("gate"), source, "gate")
    data = _mapping(top.get("data"), source, "data")
    debounce = _number(data.get("debounce_seconds"), source, "data.debounce_seconds")
    if debounce is not None and not 0 <= debounce <= 3600:
        raise ConfigError(source, "data.debounce_seconds", "expected 0 to 3600 seconds")
    return ProjectConfig(
        model_name=_string(model.get("name"), source, "model.name") or "model",
        artifact=_relative_path(
            _string(model.get("artifact"), source, "model.artifact") or "models/model.pkl",
            source,
            "model.artifact",
        ),
        metrics=_relative_path(
            _string(model.get("metrics"), source, "model.metrics") or "metrics.json", source, "model.metrics"
        ),
        rules=tuple(rules) or DEFAULT_RULES,
        stages=stages,
        deploy=deploy,
        gate=GateConfig(
            metric=_string(gate.get("metric"), source, "gate.metric") or "accuracy",
            min=_number(gate.get("min"), source, "gate.min"),
            max_drop_vs_production=_number(
                gate.get("max_drop_vs_production"), source, "gate.max_drop_vs_production"
            ),
        ),
        data_into=_relative_path(
            _string(data.get("into"), source, "data.into") or "data/raw", source, "data.into"
        ),
        debounce_seconds=30.0 if debounce is None else debounce,
    )
