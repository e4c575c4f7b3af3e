"""Typed configuration of the server: its registered repositories (``loopline.yaml``).

Parsing takes plain dicts (already loaded YAML) so that every rule is checked in one
place and errors name the file, the key and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipelines.events import DataObject

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


def mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__}")
    return value


def string(value: Any, source: str, key: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ConfigError(source, key, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, "expected a non-empty string")
    return value


def number(value: Any, source: str, key: str) -> float | None:
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
        return DataLakeEntry(folder=string(value, source, f"{key}.folder", required=True))
    spec = mapping(value, source, f"{key}.{kind}")
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
        value = string(spec.get(name), source, where, required=name in ("bucket", "account", "container"))
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
    top = mapping(raw, source, "(top level)")
    repos = top.get("repositories", [])
    if not isinstance(repos, list):
        raise ConfigError(source, "repositories", "expected a list")
    result: list[RepoConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(repos):
        key = f"repositories[{i}]"
        entry = mapping(item, source, key)
        name = string(entry.get("name"), source, f"{key}.name", required=True)
        assert name is not None
        if not _NAME_RE.match(name):
            raise ConfigError(source, f"{key}.name", "use letters, digits, '.', '_' or '-'")
        if name in seen:
            raise ConfigError(source, f"{key}.name", f"duplicate repository name {name!r}")
        seen.add(name)
        provider = entry.get("provider", "git")
        if provider not in PROVIDERS:
            raise ConfigError(source, f"{key}.provider", f"must be one of {', '.join(PROVIDERS)}")
        url = string(entry.get("url"), source, f"{key}.url", required=True)
        branches = entry.get("branches", ["main"])
        if not isinstance(branches, list) or not branches or not all(isinstance(b, str) for b in branches):
            raise ConfigError(source, f"{key}.branches", "expected a non-empty list of branch names")
        lakes = entry.get("data_lake", []) or []
        if not isinstance(lakes, list):
            raise ConfigError(source, f"{key}.data_lake", "expected a list")
        lake_entries = []
        for j, lake in enumerate(lakes):
            where = f"{key}.data_lake[{j}]"
            lake_entries.append(_lake_entry(mapping(lake, source, where), source, where))
        match = string(entry.get("match"), source, f"{key}.match") or name
        result.append(
            RepoConfig(
                name=name,
                provider=provider,
                match=match,
                url=url or "",
                secret_env=string(entry.get("secret_env"), source, f"{key}.secret_env"),
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
    raw = mapping(value, source, key)
    unknown = set(raw) - {"token_env", "api_url", "provider", "repository", "context"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    host = raw.get("provider", provider)
    if host not in STATUS_PROVIDERS:
        raise ConfigError(source, f"{key}.provider", f"must be one of {', '.join(STATUS_PROVIDERS)}")
    api_url = string(raw.get("api_url"), source, f"{key}.api_url") or STATUS_API_DEFAULTS.get(host)
    if api_url is None:
        raise ConfigError(source, f"{key}.api_url", f"is required for {host} (your server's API URL)")
    if not api_url.startswith(("https://", "http://")):
        raise ConfigError(source, f"{key}.api_url", "must be an http(s) URL")
    repository = string(raw.get("repository"), source, f"{key}.repository") or match
    if "/" not in repository.strip("/"):
        raise ConfigError(source, f"{key}.repository", "expected owner/name: the host's repository path")
    token_env = string(raw.get("token_env"), source, f"{key}.token_env", required=True)
    context = string(raw.get("context"), source, f"{key}.context") or "loopline"
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
