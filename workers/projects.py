"""Where a repository lives on disk, and its ``loopline.yml`` as of a commit."""

from __future__ import annotations

from pathlib import Path

import yaml

from loopline.settings import Settings
from pipelines.config import ConfigError, ProjectConfig, RepoConfig, parse_project_config
from workers.gitops import Mirror

PROJECT_FILE = "loopline.yml"


def mirror(settings: Settings, repo: RepoConfig) -> Mirror:
    return Mirror(path=settings.home / "mirrors" / f"{repo.name}.git", url=repo.url)


def workspace(settings: Settings, run_id: int) -> Path:
    return settings.home / "work" / str(run_id)


def log_path(settings: Settings, run_id: int, stage: str) -> Path:
    return settings.home / "logs" / str(run_id) / f"{stage}.log"


def load_project(raw: bytes | None, source: str = PROJECT_FILE) -> ProjectConfig:
    """Parse ``loopline.yml`` bytes; ``None`` (no file) gives the defaults."""
    if raw is None:
        return parse_project_config(None, source)
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(source, "(file)", f"is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_project_config(data, source)


def project_at(settings: Settings, repo: RepoConfig, commit: str) -> ProjectConfig:
    return load_project(mirror(settings, repo).show(commit, PROJECT_FILE))


def project_in(worktree: Path) -> ProjectConfig:
    path = worktree / PROJECT_FILE
    return load_project(path.read_bytes() if path.exists() else None)
