"""Shared fixtures: real stores (SQLite and PostgreSQL), real git repositories, settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from config.settings import Settings
from loopline.demo import EXAMPLE, prepare_project
from pipelines.config import RepoConfig
from store.db import Database

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = Path(__file__).parent / "payloads"
#: When this test session began (screenshots newer than this are its own).
STARTED = time.time()
#: The system Redis the end-to-end tests run their stacks on: a database per pytest-xdist worker
#: (gw0 → 11, gw1 → 12 …), since each test flushes it and two stacks on one database would take
#: each other's tasks. ``LOOPLINE_TEST_REDIS_URL`` overrides it (for one pytest process).
SYSTEM_REDIS = os.environ.get("LOOPLINE_TEST_REDIS_URL") or (
    f"redis://127.0.0.1:6379/{11 + int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:])}"
)
PG_ADMIN_URL = os.environ.get("LOOPLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}): PostgreSQL tests SKIPPED"


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database of ``kind`` (sqlite or postgresql), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'loopline.db'}"
        return
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"loopline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def shared_environments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One directory of project environments (and one uv cache) for the whole session: each
    environment is built once, not once per test's LOOPLINE_HOME. Workers the tests start
    inherit it through the environment."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist: one directory for all its workers
        root = root.parent  # (the environment cache locks each build, so they share it safely)
    base = root / "environments"
    saved = {k: os.environ.get(k) for k in ("LOOPLINE_ENVIRONMENTS", "UV_CACHE_DIR")}
    os.environ["LOOPLINE_ENVIRONMENTS"] = str(base)
    os.environ["UV_CACHE_DIR"] = str(base / ".uv-cache")
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def outside_env() -> dict[str, str]:
    """This process's environment without Loopline's settings, as a separate Loopline process
    should start; the session's shared project environments stay."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_") or k == "LOOPLINE_ENVIRONMENTS"
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


def make_settings(
    tmp_path: Path,
    repos: tuple[RepoConfig, ...] = (),
    *,
    db_url: str | None = None,
    secrets: dict[str, bytes] | None = None,
    **kwargs: object,
) -> Settings:
    home = tmp_path / "home"
    return Settings(
        home=home,
        config_path=tmp_path / "loopline.yaml",
        database_url=db_url or f"sqlite:///{home / 'loopline.db'}",
        broker_url=f"redis+socket://{home / 'redis.sock'}",
        repositories=repos,
        secrets=secrets or {},
        **kwargs,
    )  # type: ignore[arg-type]


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


class Project:
    """A working clone of the sample project with a bare remote, for real pushes."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.remote = root / "remote.git"
        prepare_project(EXAMPLE, self.work, self.remote)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        return self.head()

    def push(self, branch: str = "main", env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            ["git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"],
            cwd=self.work,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        )
        return proc.stdout + proc.stderr

    def repo_config(self, name: str = "churn", **kwargs: object) -> RepoConfig:
        return RepoConfig(name=name, provider="git", match=name, url=str(self.remote), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def example_environment(shared_environments: Path, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The sample project's environment, built once per session before the first test that
    pushes the project: no test's own deadlines include the cold build."""
    from workers.environments import ensure
    from workers.projects import load_project

    work = tmp_path_factory.mktemp("example-environment")
    for name in ("loopline.yml", "requirements.txt"):
        shutil.copy(EXAMPLE / name, work / name)
    config = load_project(lambda path: (work / path).read_bytes() if (work / path).is_file() else None)
    with (work / "build.log").open("wb") as log:
        return ensure(work / "home", config.environment, work, log, limits=config.sandbox).prefix


@pytest.fixture
def project(tmp_path: Path, example_environment: Path | None) -> Project:
    return Project(tmp_path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the dashboard's browser tests saved their screenshots (CI keeps them); read from
    the directory, since pytest-xdist's workers took them."""
    from dashboard_fixtures import screenshots_dir

    folder = screenshots_dir()
    shots = sorted(p.name for p in folder.glob("*.png") if p.stat().st_mtime >= STARTED)
    if shots:
        terminalreporter.write_line(f"dashboard screenshots in {folder}: {', '.join(shots)}")
