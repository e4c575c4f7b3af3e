"""Project environments: the Python and libraries a project's commands run with, built by uv.

An environment is keyed by what it is made of (the lock or requirements file's bytes, the
kind, the interpreter's path and version): runs of any repository with the same inputs share
it. Each is built at most once at a time (a file lock), in the sandbox (a requirements file may
build sdists, whose ``setup.py`` is the project's code), by uv from PyPI only: uv never
downloads an interpreter (``UV_PYTHON_DOWNLOADS=never``, ``--python`` an installed one). A
ready environment has a marker file; the least recently used beyond :data:`KEEP` are evicted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipelines.environment import EnvironmentConfig
from pipelines.errors import LooplineError
from pipelines.project import ProjectConfig
from store.locks import file_lock
from workers import sandbox
from workers.process import run_logged

#: Environments kept; older ones (by last use) are removed after a build, but never one used
#: within :data:`IN_USE_SECONDS` (a running stage may have it mounted).
KEEP = int(os.environ.get("LOOPLINE_ENVIRONMENTS_KEEP") or 8)
#: How environments are built (part of their hash): raised when that changes, so environments
#: built the old way are built again rather than reused. 2: bytecode compiled at build time.
RECIPE = 2
IN_USE_SECONDS = 24 * 3600.0
READY = ".loopline-ready.json"
BUILD_TIMEOUT = 1800.0
_VERSION_RE = re.compile(r"^\d+\.\d+$")


class EnvironmentBuildError(LooplineError):
    """The environment cannot be resolved or built; the message says why."""


@dataclass(frozen=True)
class Environment:
    """A ready environment (``prefix`` None: Loopline's own interpreter, ``inherit``)."""

    key: str
    kind: str
    prefix: Path | None
    python: str
    source: str | None  # the file it was made from

    def describe(self) -> str:
        if self.prefix is None:
            return f"inherit: Loopline's own interpreter (Python {self.python}) — trusted code only"
        made = f" from {self.source}" if self.source else " (no environment file: the interpreter alone)"
        return f"{self.kind}{made}, Python {self.python}, hash {self.key}"


def root(home: Path) -> Path:
    """Where environments live: ``LOOPLINE_ENVIRONMENTS`` or ``LOOPLINE_HOME/environments``."""
    return Path(os.environ.get("LOOPLINE_ENVIRONMENTS") or home / "environments")


def uv_cache(home: Path) -> Path:
    """Where uv keeps downloaded wheels, shared by every build (``UV_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("UV_CACHE_DIR") or root(home) / ".uv-cache")


def detect(config: EnvironmentConfig, worktree: Path) -> EnvironmentConfig:
    """The declared environment, or the one the worktree's files imply (uv.lock, then
    requirements.txt, then pyproject.toml; none: the interpreter alone)."""
    if config.kind != "auto":
        return config
    for kind, name in (
        ("lock", "uv.lock"),
        ("requirements", "requirements.txt"),
        ("pyproject", "pyproject.toml"),
    ):
        if (worktree / name).is_file():
            return EnvironmentConfig(kind=kind, file=name, python=config.python)
    return EnvironmentConfig(kind="bare", python=config.python)


def interpreter(version: str | None) -> tuple[Path, str]:
    """An installed interpreter for ``version`` (``"3.11"``; None: Loopline's own version), and
    its full version. System interpreters first: the sandbox sees them without extra binds."""
    wanted = version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not _VERSION_RE.match(wanted):
        raise EnvironmentBuildError(f"environment.python: {wanted!r} is not a version like 3.11")
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    candidates = [Path(f"/usr/local/bin/python{wanted}"), Path(f"/usr/bin/python{wanted}"), base]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            full = _version_of(candidate)
            if full and full.rsplit(".", 1)[0] == wanted:
                return candidate.resolve(), full
    raise EnvironmentBuildError(
        f"no Python {wanted} is installed here (looked at {', '.join(map(str, candidates))}); "
        "Loopline does not download interpreters: install one or change environment.python"
    )


@functools.cache  # asked once per process: a cache hit then costs no subprocess at all
def _version_of(python: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def key_of(config: EnvironmentConfig, worktree: Path, python: Path, full_version: str) -> str:
    """The environment's hash: how it is built, its kind, file bytes, interpreter and uv's version."""
    digest = hashlib.sha256()
    digest.update(f"{RECIPE}\0{config.kind}\0{python}\0{full_version}\0{uv_version()}\0".encode())
    if config.file:
        path = worktree / config.file
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise EnvironmentBuildError(f"environment file {config.file} cannot be read: {exc}") from exc
        if config.kind == "lock":  # uv sync reads the project's pyproject.toml next to the lock
            sibling = path.parent / "pyproject.toml"
            digest.update(sibling.read_bytes() if sibling.is_file() else b"")
    return digest.hexdigest()[:20]


def uv_binary() -> Path:
    from uv import find_uv_bin

    return Path(find_uv_bin())


def uv_version() -> str:
    return _version_line(str(uv_binary()))


@functools.cache
def _version_line(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip()


def ensure(
    home: Path, config: EnvironmentConfig, worktree: Path, log: IO[bytes], *, limits: sandbox.Limits
) -> Environment:
    """The ready environment for ``config`` in ``worktree``: from the cache, else built now
    (while holding its lock; a second caller waits and then finds it ready)."""
    config = detect(config, worktree)
    if config.kind == "inherit":
        version = ".".join(map(str, sys.version_info[:3]))
        return Environment(key="inherit", kind="inherit", prefix=None, python=version, source=None)
    python, full = interpreter(config.python)
    key = key_of(config, worktree, python, full)
    prefix = root(home) / key
    env = Environment(key=key, kind=config.kind, prefix=prefix, python=full, source=config.file)
    if _ready(prefix):
        _touch(prefix)
        return env
    with file_lock(_lock(home, key)):
        if _ready(prefix):  # built by whoever held the lock before us
            _touch(prefix)
            return env
        _build(home, config, worktree, python, prefix, log, limits)
        (prefix / READY).write_text(json.dumps({"key": key, "kind": config.kind, "python": full}) + "\n")
    evict(home, keep=KEEP, spare=prefix)
    return env


def _lock(home: Path, key: str) -> Path:
    """Beside the environments, not under ``home``: processes with homes of their own may share
    one ``LOOPLINE_ENVIRONMENTS`` directory, and must share its locks too."""
    return root(home) / ".locks" / f"{key}.lock"


def _ready(prefix: Path) -> bool:
    return (prefix / READY).is_file()


def _touch(prefix: Path) -> None:
    try:
        os.utime(prefix / READY)
    except OSError:
        pass


def _build(
    home: Path,
    config: EnvironmentConfig,
    worktree: Path,
    python: Path,
    prefix: Path,
    log: IO[bytes],
    limits: sandbox.Limits,
) -> None:
    """uv venv, then the packages, in the sandbox (network on: PyPI), into ``prefix``."""
    if prefix.exists():  # a build that died half-way
        shutil.rmtree(prefix)
    prefix.mkdir(parents=True)
    cache = uv_cache(home)
    cache.mkdir(parents=True, exist_ok=True)
    uv = uv_binary()
    box = sandbox.Box(
        worktree=worktree,
        read=(uv,),
        write=(prefix, cache),
        network=True,
        limits=sandbox.Limits(
            memory_mb=max(limits.memory_mb, 4096), cpu_seconds=limits.cpu_seconds, processes=limits.processes
        ),
    )
    env = {
        "UV_CACHE_DIR": str(cache),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        # Copies, not hardlinks: the cache and the environment are separate mounts in the
        # sandbox, and a link into a shared cache would let one build change another's files.
        "UV_LINK_MODE": "copy",
        "UV_PROJECT_ENVIRONMENT": str(prefix),
        # Stages and model servers see the environment read-only, so Python cannot cache the
        # bytecode it compiles: each process compiled every module it imported. Measured with
        # the sample project's scikit-learn: `import sklearn.dummy` took 1.37 s, 0.63 s compiled.
        "UV_COMPILE_BYTECODE": "1",
    }
    for var in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL", "SSL_CERT_FILE"):
        if var in os.environ:
            env[var] = os.environ[var]
    target = str(prefix / "bin" / "python")
    steps: list[list[str]] = [[str(uv), "venv", "--quiet", "--python", str(python), str(prefix)]]
    if config.kind == "requirements":
        assert config.file
        steps.append([str(uv), "pip", "install", "--python", target, "-r", config.file])
    elif config.kind == "pyproject":
        assert config.file
        steps.append([str(uv), "pip", "install", "--python", target, "-r", config.file])
    elif config.kind == "lock":
        assert config.file
        project = str((worktree / config.file).parent)
        steps = [
            [
                str(uv),
                "sync",
                "--frozen",
                "--no-install-project",
                "--python",
                str(python),
                "--project",
                project,
            ]
        ]
    started = time.monotonic()
    for argv in steps:
        code = run_logged(argv, cwd=worktree, log=log, timeout=BUILD_TIMEOUT, env=env, box=box)
        if code != 0:
            shutil.rmtree(prefix, ignore_errors=True)
            raise EnvironmentBuildError(
                f"building the environment failed: {Path(argv[0]).name} {argv[1]} exit {code}"
            )
    log.write(f"[loopline] environment built in {time.monotonic() - started:.1f}s: {prefix}\n".encode())


def evict(
    home: Path, *, keep: int, spare: Path | None = None, in_use_seconds: float = IN_USE_SECONDS
) -> list[Path]:
    """Remove all but the ``keep`` most recently used ready environments (never ``spare``, one
    used within ``in_use_seconds``, nor one being built: its lock is held)."""
    base = root(home)
    if not base.is_dir():
        return []
    ready = [p for p in base.iterdir() if p.is_dir() and _ready(p)]
    ready.sort(key=lambda p: (p / READY).stat().st_mtime, reverse=True)
    removed = []
    for old in ready[keep:]:
        if old == spare or (old / READY).stat().st_mtime > time.time() - in_use_seconds:
            continue
        with file_lock(_lock(home, old.name), wait=False) as free:
            if free:
                (old / READY).unlink(missing_ok=True)
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
    return removed


def box_for(
    home: Path,
    project: ProjectConfig,
    directory: Path,
    log: IO[bytes],
    *,
    read: tuple[Path, ...] = (),
    write: tuple[Path, ...] = (),
    network: bool | None = None,
) -> sandbox.Box:
    """The sandbox for one of a project's commands in ``directory``: its environment (from the
    cache, built if missing), its network switch and its limits."""
    limits = project.sandbox
    env = ensure(home, project.environment, directory, log, limits=limits)
    return sandbox.Box(
        worktree=directory,
        prefix=env.prefix,
        read=read,
        write=write,
        network=project.sandbox.network if network is None else network,
        limits=limits,
    )
