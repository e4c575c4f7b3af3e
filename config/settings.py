"""Server settings, declared once with types and read from ``LOOPLINE_*`` and ``loopline.yaml``.

A setting is one field: its alias is the environment variable it is read from, its type checks
the value (a bad one is a :class:`ConfigError` naming the variable), its default applies when the
variable is unset or empty.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from pipelines.config import ConfigError, RepoConfig, parse_server_config
from pipelines.schema import check, load

MB = 1024 * 1024


def _storage_url(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/")) or (
        parts.scheme == "s3" and bool(parts.netloc)
    )


_ENV = ConfigDict(validate_by_name=True, validate_by_alias=True)


@dataclass(frozen=True, config=_ENV)
class Settings:
    home: Path = Field(alias="LOOPLINE_HOME")
    config_path: Path = Field(alias="LOOPLINE_CONFIG")
    #: Default: SQLite in ``home``.
    database_url: str = Field(alias="LOOPLINE_DATABASE_URL")
    #: Default: the Redis socket in ``home`` that ``loopline up`` starts.
    broker_url: str = Field(alias="LOOPLINE_BROKER_URL")
    repositories: tuple[RepoConfig, ...] = ()
    #: Webhook secrets by repository name, resolved from each ``secret_env``; never logged.
    secrets: Mapping[str, bytes] = Field(default_factory=dict, repr=False)
    #: Each repository's pipeline secrets (``repositories[].secrets``) by name, resolved from
    #: their variables: the only secrets its stages see; never logged.
    pipeline_secrets: Mapping[str, Mapping[str, str]] = Field(default_factory=dict, repr=False)
    api_token: str | None = Field(default=None, repr=False, alias="LOOPLINE_API_TOKEN")
    #: Bearer token for ``/events/*`` (storage senders cannot sign bodies); unset = refused.
    event_token: str | None = Field(default=None, repr=False, alias="LOOPLINE_EVENT_TOKEN")
    max_body_bytes: int = Field(default=25 * MB, gt=0, alias="LOOPLINE_MAX_BODY_BYTES")
    stage_timeout: float = Field(default=3600.0, gt=0, alias="LOOPLINE_STAGE_TIMEOUT")
    #: A running stage's lease: its worker renews it every third of this; a lease that ran out
    #: means the worker died, and the stage runs again, up to ``max_attempts`` times in all.
    lease_seconds: float = Field(default=30.0, gt=0, alias="LOOPLINE_LEASE_SECONDS")
    max_attempts: int = Field(default=3, ge=1, alias="LOOPLINE_MAX_ATTEMPTS")
    #: Where people reach the dashboard: commit statuses link to ``{public_url}/#run=<id>``.
    public_url: Annotated[str, AfterValidator(lambda v: v.rstrip("/"))] = Field(
        default="http://127.0.0.1:8080", alias="LOOPLINE_PUBLIC_URL"
    )
    #: Celery Flower, if run: the dashboard links each run's stages to their tasks there.
    flower_url: Annotated[str | None, AfterValidator(lambda v: v.rstrip("/") or None if v else None)] = Field(
        default=None, alias="LOOPLINE_FLOWER_URL"
    )
    #: The address other hosts reach this host's releases at (registered as their URL); ``auto``:
    #: this host's own address. Anything but loopback makes releases listen on every interface.
    serving_address: str = Field(default="127.0.0.1", min_length=1, alias="LOOPLINE_SERVING_ADDRESS")
    #: This host's name for releases: a release is started and stopped only by the host it runs
    #: on, whose workers also take the ``host.<name>`` queue (default: the machine's hostname).
    host: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200, alias="LOOPLINE_HOST")
    #: The queue the ``deploy`` stage goes to: ``serving`` pins releases to the serving hosts
    #: (workers started with ``-Q serving``); default: any default worker.
    serving_queue: Literal["default", "serving"] = Field(default="default", alias="LOOPLINE_SERVING_QUEUE")
    #: Object storage for dataset objects, artifacts, finished stage logs and release bundles:
    #: ``file:///path`` or ``s3://bucket/prefix`` (credentials from the ``AWS_*`` variables);
    #: default ``home/storage``.
    storage_url: Annotated[str, check(_storage_url, "expected file:///path or s3://bucket/prefix")] | None = (
        Field(default=None, alias="LOOPLINE_STORAGE_URL")
    )

    #: A notification target for every repository: its URL, and ``json`` or ``slack``.
    notify_url: str | None = Field(default=None, repr=False, alias="LOOPLINE_NOTIFY_URL")
    notify_format: Literal["json", "slack"] = Field(default="json", alias="LOOPLINE_NOTIFY_FORMAT")

    @property
    def storage(self) -> str:
        """The object storage's URL (``store.blobs.open_store`` opens it)."""
        return self.storage_url or (self.home / "storage").as_uri()

    def repo(self, name: str) -> RepoConfig | None:
        return next((r for r in self.repositories if r.name == name), None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; a bad variable or config file raises :class:`ConfigError` naming it."""
        env = os.environ if env is None else env
        given = {k: v for k, v in env.items() if k.startswith("LOOPLINE_") and v}
        home = Path(given.get("LOOPLINE_HOME") or Path.home() / ".loopline").expanduser().resolve()
        explicit = given.get("LOOPLINE_CONFIG")
        config_path = Path(explicit or "loopline.yaml").expanduser().resolve()
        repos = load_repositories(config_path, required=bool(explicit))
        secrets: dict[str, bytes] = {}
        for repo in repos:
            if repo.secret_env:
                value = env.get(repo.secret_env)
                if not value:
                    raise ConfigError(
                        str(config_path),
                        f"{repo.name}.secret_env",
                        f"environment variable {repo.secret_env} is not set",
                    )
                secrets[repo.name] = value.encode()
        pipeline_secrets = {repo.name: _pipeline_secrets(repo, env, config_path) for repo in repos}
        fields: dict[str, Any] = {
            "LOOPLINE_DATABASE_URL": f"sqlite:///{home / 'loopline.db'}",
            "LOOPLINE_BROKER_URL": f"redis+socket://{home / 'redis.sock'}",
            **{k: v for k, v in given.items() if k in _VARIABLES},
            "LOOPLINE_HOME": home,
            "LOOPLINE_CONFIG": config_path,
            "repositories": repos,
            "secrets": secrets,
            "pipeline_secrets": {name: found for name, found in pipeline_secrets.items() if found},
        }
        return load(cls, fields, "environment")


#: The variables the settings read (others, such as a stage's ``LOOPLINE_MODEL_PATH``, are not ours).
_VARIABLES = {
    f.default.alias
    for f in dataclasses.fields(Settings)
    if isinstance(f.default, FieldInfo) and f.default.alias
}


def _pipeline_secrets(repo: RepoConfig, env: Mapping[str, str], config_path: Path) -> dict[str, str]:
    found = {}
    for name, secret in repo.secrets.items():
        value = env.get(secret.env)
        if not value:
            raise ConfigError(
                str(config_path),
                f"{repo.name}.secrets.{name}.env",
                f"environment variable {secret.env} is not set",
            )
        found[name] = value
    return found


def load_repositories(path: Path, *, required: bool) -> tuple[RepoConfig, ...]:
    if not path.exists():
        if required:
            raise ConfigError(str(path), "(file)", "does not exist")
        return ()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot be read: {exc}".splitlines()[0]) from exc
    return parse_server_config(raw, str(path))
