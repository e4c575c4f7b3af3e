"""Typed configuration: the server's registered repositories and a project's ``loopline.yml``.

Parsing takes plain dicts (already loaded YAML) so that every rule is checked in one
place and errors name the file, the key and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.classify import KINDS, Rule, glob_regex
from pipelines.rules import default_rules

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
    canary_percent: int = 0
    health_path: str = "/healthz"


@dataclass(frozen=True)
class GateConfig:
    metric: str = "accuracy"
    min: float | None = None
    max_drop_vs_production: float | None = None


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


def _globs(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise ConfigError(source, key, "expected a list of glob patterns")
    return value


def _release(value: Any, source: str) -> ReleaseConfig:
    release = _mapping(value, source, "release")
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
    top = _mapping(raw, source, "(top level)")
    unknown = set(top) - {"model", "classify", "stages", "gate", "data", "release"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown key")
    model = _mapping(top.get("model"), source, "model")
    rules: list[Rule] = []
    classify = _mapping(top.get("classify"), source, "classify")
    for kind, globs in classify.items():
        if kind not in KINDS:
            raise ConfigError(source, f"classify.{kind}", f"kind must be one of {', '.join(KINDS)}")
        key = f"classify.{kind}"
        rules.extend(Rule(kind, g, f"{key}[{i}]: {g}") for i, g in enumerate(_globs(globs, source, key)))
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
            canary = d.get("canary_percent", 0)
            if isinstance(canary, bool) or not isinstance(canary, int) or not 0 <= canary <= 100:
                raise ConfigError(source, "stages.deploy.canary_percent", "expected an integer 0-100")
            deploy = DeployConfig(
                target=target,
                approval=approval,
                canary_percent=canary,
                command=_string(d.get("command"), source, "stages.deploy.command"),
                health_path=_string(d.get("health"), source, "stages.deploy.health") or "/healthz",
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
        rules=tuple(rules) or default_rules(dvc, dvc_files),
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
        release=_release(top.get("release"), source),
    )
