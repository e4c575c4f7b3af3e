"""Server settings, declared once with types and read from ``LOOPLINE_*`` and ``loopline.yaml``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.config import ConfigError, RepoConfig, parse_server_config

MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    home: Path
    config_path: Path
    database_url: str
    broker_url: str
    repositories: tuple[RepoConfig, ...] = ()
    #: Webhook secrets by repository name, resolved from each ``secret_env``; never logged.
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    api_token: str | None = field(default=None, repr=False)
    #: Bearer token for ``/events/*`` (storage senders cannot sign bodies); unset = refused.
    event_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 25 * MB
    stage_timeout: float = 3600.0
    #: A running stage's lease: its worker renews it every third of this; a lease that ran out
    #: means the worker died, and the stage runs again, up to ``max_attempts`` times in all.
    lease_seconds: float = 30.0
    max_attempts: int = 3
    #: Where people reach the dashboard: commit statuses link to ``{public_url}/#run=<id>``.
    public_url: str = "http://127.0.0.1:8080"

    def repo(self, name: str) -> RepoConfig | None:
        return next((r for r in self.repositories if r.name == name), None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; a bad config file raises :class:`ConfigError` naming it."""
        env = os.environ if env is None else env
        home = Path(env.get("LOOPLINE_HOME") or Path.home() / ".loopline").expanduser().resolve()
        explicit = env.get("LOOPLINE_CONFIG")
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
        return cls(
            home=home,
            config_path=config_path,
            database_url=env.get("LOOPLINE_DATABASE_URL") or f"sqlite:///{home / 'loopline.db'}",
            broker_url=env.get("LOOPLINE_BROKER_URL") or f"redis+socket://{home / 'redis.sock'}",
            repositories=repos,
            secrets=secrets,
            api_token=env.get("LOOPLINE_API_TOKEN") or None,
            event_token=env.get("LOOPLINE_EVENT_TOKEN") or None,
            max_body_bytes=int(env.get("LOOPLINE_MAX_BODY_BYTES") or 25 * MB),
            stage_timeout=float(env.get("LOOPLINE_STAGE_TIMEOUT") or 3600),
            lease_seconds=float(env.get("LOOPLINE_LEASE_SECONDS") or 30),
            max_attempts=int(env.get("LOOPLINE_MAX_ATTEMPTS") or 3),
            public_url=(env.get("LOOPLINE_PUBLIC_URL") or "http://127.0.0.1:8080").rstrip("/"),
        )


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
