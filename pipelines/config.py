"""Typed configuration of the server: its registered repositories (``loopline.yaml``).

Each class is the schema of its part of the file (pydantic dataclasses); :func:`parse_server_config`
validates loaded YAML against it, and errors name the file, the key and the problem.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from pydantic.dataclasses import dataclass

from pipelines.events import DataObject
from pipelines.providers import PROVIDERS as HOSTS
from pipelines.schema import (
    STRICT,
    ConfigError,
    EnvName,
    NonEmpty,
    Url,
    check,
    explained,
    load,
    one_of,
    problem,
)

__all__ = ["ConfigError"]

#: Every Git host, and those with a commit-status API (and its public address), from the one list.
PROVIDERS = tuple(HOSTS)
STATUS_PROVIDERS = tuple(name for name, host in HOSTS.items() if host.status)
STATUS_API_DEFAULTS = {
    name: host.status.default_url for name, host in HOSTS.items() if host.status and host.status.default_url
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


@dataclass(frozen=True, config=STRICT)
class S3Lake:
    """An S3 or S3-compatible (MinIO) bucket. Credentials are named, never written here: each
    ``*_env`` names an environment variable the workers read; none set = boto3's own chain."""

    bucket: NonEmpty
    prefix: str = ""
    endpoint_url: Url | None = None
    region: NonEmpty | None = None
    access_key_env: EnvName | None = None
    secret_key_env: EnvName | None = None
    session_token_env: EnvName | None = None

    @model_validator(mode="after")
    def _key_pair(self) -> S3Lake:
        if bool(self.access_key_env) != bool(self.secret_key_env):
            raise problem("access_key_env and secret_key_env go together")
        return self


@dataclass(frozen=True, config=STRICT)
class AzureLake:
    """An Azure Blob Storage (or ADLS Gen2) container; ``credential_env`` names a variable
    holding a SAS token or an OAuth bearer token."""

    account: NonEmpty
    container: NonEmpty
    prefix: str = ""
    endpoint: Url | None = None
    credential_env: EnvName | None = None

    @property
    def base_url(self) -> str:
        return (self.endpoint or f"https://{self.account}.blob.core.windows.net").rstrip("/")


@dataclass(frozen=True, config=STRICT)
class DataLakeEntry:
    """Exactly one of ``folder``, ``s3`` or ``azure``."""

    folder: NonEmpty | None = None
    s3: S3Lake | None = None
    azure: AzureLake | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and (len(raw) != 1 or next(iter(raw)) not in ("folder", "s3", "azure")):
            raise problem("expected exactly one of folder, s3, azure")
        return raw

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


@dataclass(frozen=True, config=STRICT)
class StatusConfig:
    """Where and how a repository's runs are reported as commit statuses."""

    provider: Annotated[str, one_of(STATUS_PROVIDERS)]
    api_url: Annotated[Url, AfterValidator(lambda v: v.rstrip("/"))]
    token_env: EnvName
    #: ``owner/repo`` (GitLab: the project's full path; Bitbucket: ``workspace/repo_slug``).
    repository: Annotated[
        NonEmpty,
        check(lambda v: "/" in v.strip("/"), "expected owner/name: the host's repository path"),
        AfterValidator(lambda v: v.strip("/")),
    ]
    context: Annotated[
        NonEmpty, check(lambda v: len(v) <= 40, "at most 40 characters (Bitbucket's limit for a key)")
    ] = "loopline"


#: What a notification target hears about: a run waiting for approval, failed, stopped by its
#: gate, or a trigger that fired (``workers/notify.py``).
NOTICES = ("approval", "failed", "gate_failed", "trigger")


@dataclass(frozen=True, config=STRICT)
class NotifyTarget:
    """An outgoing webhook. ``url_env`` names the variable holding its URL: a Slack URL is its
    own secret, so it is never written here."""

    url_env: EnvName
    format: Annotated[str, one_of(("json", "slack"))] = "json"
    on: Annotated[tuple[Annotated[str, one_of(NOTICES)], ...], Field(min_length=1)] = NOTICES


@dataclass(frozen=True, config=STRICT)
class PipelineSecret:
    """A secret the repository's stage commands get (``secrets: {NAME: {env: VAR}}``): read from
    Loopline's environment variable ``env``, masked as ``***`` in their logs."""

    env: EnvName


@dataclass(frozen=True, config=STRICT)
class RepoConfig:
    """One repository registered with the server (``loopline.yaml``)."""

    name: Annotated[NonEmpty, check(re.compile(_NAME).match, "use letters, digits, '.', '_' or '-'")]
    provider: Annotated[str, one_of(PROVIDERS)]
    #: The repository's name in the host's webhooks (``owner/repo``); default: ``name``.
    match: NonEmpty
    url: NonEmpty
    secret_env: EnvName | None = None
    branches: Annotated[
        tuple[NonEmpty, ...],
        Field(min_length=1),
        explained("expected a non-empty list of branch names"),
    ] = ("main",)
    data_lake: tuple[DataLakeEntry, ...] = ()
    status: StatusConfig | None = None
    #: The only secrets its stages see, by the name they see them under.
    secrets: dict[EnvName, PipelineSecret] = Field(default_factory=dict)
    notify: tuple[NotifyTarget, ...] = ()

    @property
    def default_branch(self) -> str:
        return self.branches[0]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """In the file: ``provider`` defaults to plain ``git``, ``match`` to the name, and ``status``
        to this repository's provider, path and (for public hosts) API."""
        if not isinstance(raw, dict):
            return raw
        raw = {"provider": "git", **raw}
        if "name" in raw:
            raw.setdefault("match", raw["name"])
        status = raw.get("status")
        if isinstance(status, dict):
            host = status.get("provider", raw["provider"])
            defaults = {"provider": host, "repository": raw.get("match")}
            if host in STATUS_API_DEFAULTS:
                defaults["api_url"] = STATUS_API_DEFAULTS[host]
            elif host in STATUS_PROVIDERS and "api_url" not in status:
                raise problem(f"is required for {host} (your server's API URL)", at="status.api_url")
            raw["status"] = {**defaults, **status}
        return raw


@dataclass(frozen=True, config=STRICT)
class ServerFile:
    """The whole ``loopline.yaml``."""

    repositories: tuple[RepoConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> ServerFile:
        seen: set[str] = set()
        for i, repo in enumerate(self.repositories):
            if repo.name in seen:
                raise problem(f"duplicate repository name {repo.name!r}", at=f"repositories[{i}].name")
            seen.add(repo.name)
        return self


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
    return load(ServerFile, raw, source).repositories
