"""A project's ``environment:`` and ``sandbox:`` keys in ``loopline.yml`` (pure parsing).

``environment`` says what the project's commands run with::

    environment: {python: "3.11", lock: uv.lock}          # uv sync --frozen
    environment: {python: "3.11", requirements: requirements.txt}
    environment: {pyproject: pyproject.toml}              # its [project] dependencies
    environment: inherit                                  # Loopline's own interpreter: TRUSTED CODE ONLY

Absent: detected from the files (uv.lock, requirements.txt, pyproject.toml; none: the
interpreter alone). ``sandbox`` sets the network switch and the limits of every command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipelines.config import ConfigError

FILE_KINDS = ("lock", "requirements", "pyproject")
_VERSION_RE = re.compile(r"^3\.\d{1,2}$")


@dataclass(frozen=True)
class EnvironmentConfig:
    """``kind``: auto (detect), inherit, bare (the interpreter alone), lock, requirements or
    pyproject; ``file`` the file for the last three; ``python`` a version such as "3.11"."""

    kind: str = "auto"
    file: str | None = None
    python: str | None = None


@dataclass(frozen=True)
class SandboxConfig:
    """The network switch and the limits of every project command (per process)."""

    network: bool = True
    memory_mb: int = 4096
    cpu_seconds: int = 3600
    processes: int = 512
    log_mb: int = 20


def parse_environment(value: Any, source: str) -> EnvironmentConfig:
    if value is None:
        return EnvironmentConfig()
    if value == "inherit":
        return EnvironmentConfig(kind="inherit")
    if not isinstance(value, dict):
        raise ConfigError(
            source, "environment", "expected 'inherit' or {python, lock|requirements|pyproject}"
        )
    unknown = set(value) - {"python", *FILE_KINDS}
    if unknown:
        raise ConfigError(source, f"environment.{sorted(unknown)[0]}", "unknown key")
    python = value.get("python")
    if python is not None:
        python = str(python)
        if not _VERSION_RE.match(python):
            raise ConfigError(source, "environment.python", 'expected a version such as "3.11"')
    files = [k for k in FILE_KINDS if k in value]
    if len(files) > 1:
        raise ConfigError(source, "environment", f"choose one of {', '.join(files)}")
    if not files:
        return EnvironmentConfig(python=python)
    kind = files[0]
    path = value[kind]
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise ConfigError(source, f"environment.{kind}", "must be a path inside the repository")
    return EnvironmentConfig(kind=kind, file=path, python=python)


_LIMITS = {
    "memory_mb": (64, 1 << 20),
    "cpu_seconds": (1, 7 * 86400),
    "processes": (16, 1 << 16),
    "log_mb": (1, 1024),
}


def parse_sandbox(value: Any, source: str) -> SandboxConfig:
    if value is None:
        return SandboxConfig()
    if not isinstance(value, dict):
        raise ConfigError(source, "sandbox", f"expected a mapping, got {type(value).__name__}")
    unknown = set(value) - {"network", *_LIMITS}
    if unknown:
        raise ConfigError(source, f"sandbox.{sorted(unknown)[0]}", "unknown key")
    network = value.get("network", True)
    if not isinstance(network, bool):
        raise ConfigError(source, "sandbox.network", "expected true or false")
    limits: dict[str, int] = {}
    for name, (low, high) in _LIMITS.items():
        if name not in value:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            raise ConfigError(source, f"sandbox.{name}", f"expected an integer from {low} to {high}")
        limits[name] = number
    return SandboxConfig(network=network, **limits)
