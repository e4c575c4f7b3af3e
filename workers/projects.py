"""Where a repository lives on disk, and its ``loopline.yml`` (with ``dvc.yaml``) as of a commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig
from pipelines.project import ProjectConfig, parse_project_config
from workers.gitops import Mirror, git

PROJECT_FILE = "loopline.yml"
DVC_FILE = "dvc.yaml"


def mirror(settings: Settings, repo: RepoConfig) -> Mirror:
    return Mirror(path=settings.home / "mirrors" / f"{repo.name}.git", url=repo.url)


def workspace(settings: Settings, run_id: int) -> Path:
    return settings.home / "work" / str(run_id)


def log_path(settings: Settings, run_id: int, stage: str) -> Path:
    return settings.home / "logs" / str(run_id) / f"{stage}.log"


def _yaml(raw: bytes | None, source: str) -> Any:
    if raw is None:
        return None
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(source, "(file)", f"is not valid YAML: {str(exc).splitlines()[0]}") from exc


def load_project(
    read: Callable[[str], bytes | None], dvc_files: Callable[[], list[str]] = list
) -> ProjectConfig:
    """Parse ``loopline.yml`` as ``read(path)`` returns it (``None``: no file, the defaults).

    Without a ``classify:`` section the rules come from ``dvc.yaml`` (and the ``.dvc`` files
    ``dvc_files()`` lists), which are only read then.
    """
    raw = _yaml(read(PROJECT_FILE), PROJECT_FILE)
    if isinstance(raw, dict) and raw.get("classify"):
        return parse_project_config(raw, PROJECT_FILE)
    dvc = _yaml(read(DVC_FILE), DVC_FILE)
    if dvc is not None and not isinstance(dvc, dict):
        raise ConfigError(DVC_FILE, "(top level)", "expected a mapping")
    files = tuple(f for f in dvc_files() if f.endswith(".dvc")) if dvc is not None else ()
    return parse_project_config(raw, PROJECT_FILE, dvc=dvc, dvc_files=files)


def project_from(repo: Mirror, commit: str) -> ProjectConfig:
    """The project configuration as of ``commit`` in a mirror (or any git directory)."""
    return load_project(lambda path: repo.show(commit, path), lambda: repo.files(commit))


def project_at(settings: Settings, repo: RepoConfig, commit: str) -> ProjectConfig:
    return project_from(mirror(settings, repo), commit)


def project_in(worktree: Path) -> ProjectConfig:
    def read(path: str) -> bytes | None:
        file = worktree / path
        return file.read_bytes() if file.is_file() else None

    def files() -> list[str]:
        return git("ls-files", "-z", cwd=worktree).stdout.decode(errors="backslashreplace").split("\0")

    return load_project(read, files)
