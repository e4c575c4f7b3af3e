"""Typed configuration: the server's registered repositories and a project's ``loopline.yml``.

Parsing takes plain dicts (already loaded YAML) so that every rule is checked in one
place and errors name the file, the key and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.classify import KINDS, Rule, glob_regex
from pipelines.events import DataObject
from pipelines.rules import default_rules

PROVIDERS = ("github", "gitlab", "gitea", "forgejo", "bitbucket", "git")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class S3Lake:
    """An S3 or S3-compatible (MinIO) bucket. Credentials are named, never written here: each
    ``*_env`` names an environment variable the workers read; none set = boto3's own chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    session_token_env: str | None = None


@dataclass(frozen=True)
class AzureLake:
    """An Azure Blob Storage (or ADLS Gen2) container; ``credential_env`` names a variable
    holding a SAS token or an OAuth bearer token."""

    account: str
    container: str
    prefix: str = ""
    endpoint: str | None = None
    credential_env: str | None = None

    @property
    def base_url(self) -> str:
        return (self.endpoint or f"https://{self.account}.blob.core.windows.net").rstrip("/")


@dataclass(frozen=True)
class DataLakeEntry:
    """Exactly one of ``folder``, ``s3`` or ``azure``."""

    folder: str | None = None
    s3: S3Lake | None = None
    azure: AzureLake | None = None

    def match(self, item: DataObject) -> str | None:
        """The object's path below this entry's prefix, or None if the object is not in it.

        Drop folders are matched by the watcher itself, which scans them.
        """
        if item.store == "s3" and self.s3 and item.bucket == self.s3.bucket:
            prefix = self.s3.prefix
        elif (
            item.store == "azure"
            and self.azure
            and (item.account, item.bucket) == (self.azure.account, self.azure.container)
        ):
            prefix = self.azure.prefix
        else:
            return None
        if not item.key.startswith(prefix):
            return None
        return item.key[len(prefix) :].lstrip("/") or None


STATUS_PROVIDERS = ("github", "gitlab", "gitea", "forgejo", "bitbucket")
#: Where each host's API lives when ``status.api_url`` is not given (self-hosted: give it).
STATUS_API_DEFAULTS = {
    "github": "https://api.github.com",
    "gitlab": "https://gitlab.com/api/v4",
    "bitbucket": "https://api.bitbucket.org/2.0",
}


@dataclass(frozen=True)
class StatusConfig:
    """Where and how a repository's runs are reported as commit statuses."""

    provider: str
    api_url: str
    token_env: str
    #: ``owner/repo`` (GitLab: the project's full path; Bitbucket: ``workspace/repo_slug``).
    repository: str
    context: str = "loopline"


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
    status: StatusConfig | None = None

    @property
    def default_branch(self) -> str:
        return self.branches[0]


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


_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LAKE_KEYS = {
    "s3": {
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
        "access_key_env",
        "secret_key_env",
        "session_token_env",
    },
    "azure": {"account", "container", "prefix", "endpoint", "credential_env"},
}


def _lake_entry(raw: dict[str, Any], source: str, key: str) -> DataLakeEntry:
    """One ``data_lake`` item; credentials only ever as names of environment variables."""
    if len(raw) != 1 or next(iter(raw)) not in ("folder", "s3", "azure"):
        raise ConfigError(source, key, "expected exactly one of folder, s3, azure")
    kind, value = next(iter(raw.items()))
    if kind == "folder":
        return DataLakeEntry(folder=_string(value, source, f"{key}.folder", required=True))
    spec = _mapping(value, source, f"{key}.{kind}")
    unknown = sorted(set(spec) - _LAKE_KEYS[kind])
    if unknown:
        hint = (
            " (credentials go in environment variables: name them with *_env)" if "key" in unknown[0] else ""
        )
        raise ConfigError(source, f"{key}.{kind}.{unknown[0]}", "unknown key" + hint)
    values: dict[str, Any] = {"prefix": spec.get("prefix", "")}
    if not isinstance(values["prefix"], str):
        raise ConfigError(source, f"{key}.{kind}.prefix", "expected a string")
    for name in sorted(_LAKE_KEYS[kind] - {"prefix"}):
        where = f"{key}.{kind}.{name}"
        value = _string(spec.get(name), source, where, required=name in ("bucket", "account", "container"))
        if value and name.endswith("_env") and not _ENV_RE.match(value):
            raise ConfigError(source, where, "expected the NAME of an environment variable")
        if value and name.startswith("endpoint") and not value.startswith(("https://", "http://")):
            raise ConfigError(source, where, "expected an http:// or https:// URL")
        values[name] = value
    if kind == "s3":
        if bool(values["access_key_env"]) != bool(values["secret_key_env"]):
            raise ConfigError(source, f"{key}.s3", "access_key_env and secret_key_env go together")
        return DataLakeEntry(s3=S3Lake(**values))
    return DataLakeEntry(azure=AzureLake(**values))


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
    bounds = _mapping(value, source, key)
    unknown = set(bounds) - {"min", "max"}
    if unknown or not bounds:
        raise ConfigError(source, key, "expected {min: number, max: number} (either or both)")
    low = _number(bounds.get("min"), source, f"{key}.min")
    high = _number(bounds.get("max"), source, f"{key}.max")
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
    gate = _mapping(value, source, "gate")
    unknown = set(gate) - {"metric", "min", "max_drop_vs_production", "thresholds", "compare"}
    if unknown:
        raise ConfigError(source, f"gate.{sorted(unknown)[0]}", "unknown key")
    drop = _number(gate.get("max_drop_vs_production"), source, "gate.max_drop_vs_production")
    if drop is not None and drop < 0:
        raise ConfigError(source, "gate.max_drop_vs_production", "expected a number >= 0")
    thresholds = _mapping(gate.get("thresholds"), source, "gate.thresholds")
    return GateConfig(
        metric=_string(gate.get("metric"), source, "gate.metric") or "accuracy",
        min=_number(gate.get("min"), source, "gate.min"),
        max_drop_vs_production=drop,
        thresholds=tuple(
            (str(name), _threshold(bounds, source, f"gate.thresholds.{name}"))
            for name, bounds in thresholds.items()
        ),
        compare=_string(gate.get("compare"), source, "gate.compare"),
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
    number = _number(value, source, key)
    assert number is not None
    if not low <= number <= high:
        raise ConfigError(source, key, expected)
    return number


def _relative_path(value: str, source: str, key: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(source, key, "must be a path inside the repository")
    return value


def lake_matches(repos: tuple[RepoConfig, ...], item: DataObject) -> list[tuple[str, str]]:
    """``(repository, path below data.into)`` for each repository whose ``data_lake`` holds ``item``
    (the first matching entry of a repository wins)."""
    found: dict[str, str] = {}
    for repo in repos:
        for entry in repo.data_lake:
            path = entry.match(item)
            if path and repo.name not in found:
                found[repo.name] = path
    return list(found.items())


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
            where = f"{key}.data_lake[{j}]"
            lake_entries.append(_lake_entry(_mapping(lake, source, where), source, where))
        match = _string(entry.get("match"), source, f"{key}.match") or name
        result.append(
            RepoConfig(
                name=name,
                provider=provider,
                match=match,
                url=url or "",
                secret_env=_string(entry.get("secret_env"), source, f"{key}.secret_env"),
                branches=tuple(branches),
                data_lake=tuple(lake_entries),
                status=_status(entry.get("status"), source, f"{key}.status", provider, match),
            )
        )
    return tuple(result)


def _status(value: Any, source: str, key: str, provider: str, match: str) -> StatusConfig | None:
    """``status: {token_env, api_url?, provider?, repository?, context?}``, or None if absent."""
    if value is None:
        return None
    raw = _mapping(value, source, key)
    unknown = set(raw) - {"token_env", "api_url", "provider", "repository", "context"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    host = raw.get("provider", provider)
    if host not in STATUS_PROVIDERS:
        raise ConfigError(source, f"{key}.provider", f"must be one of {', '.join(STATUS_PROVIDERS)}")
    api_url = _string(raw.get("api_url"), source, f"{key}.api_url") or STATUS_API_DEFAULTS.get(host)
    if api_url is None:
        raise ConfigError(source, f"{key}.api_url", f"is required for {host} (your server's API URL)")
    if not api_url.startswith(("https://", "http://")):
        raise ConfigError(source, f"{key}.api_url", "must be an http(s) URL")
    repository = _string(raw.get("repository"), source, f"{key}.repository") or match
    if "/" not in repository.strip("/"):
        raise ConfigError(source, f"{key}.repository", "expected owner/name: the host's repository path")
    token_env = _string(raw.get("token_env"), source, f"{key}.token_env", required=True)
    context = _string(raw.get("context"), source, f"{key}.context") or "loopline"
    if len(context) > 40:
        raise ConfigError(source, f"{key}.context", "at most 40 characters (Bitbucket's limit for a key)")
    assert token_env is not None
    return StatusConfig(
        provider=host,
        api_url=api_url.rstrip("/"),
        token_env=token_env,
        repository=repository.strip("/"),
        context=context,
    )


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
            deploy = DeployConfig(
                target=target,
                approval=_approval(d.get("approval"), source),
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
        gate=_gate(top.get("gate"), source),
        data_into=_relative_path(
            _string(data.get("into"), source, "data.into") or "data/raw", source, "data.into"
        ),
        debounce_seconds=30.0 if debounce is None else debounce,
        release=_release(top.get("release"), source),
    )
