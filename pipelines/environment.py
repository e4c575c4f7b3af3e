"""A project's ``environment:`` and ``sandbox:`` keys in ``loopline.yml`` (their schema).

``environment`` says what the project's commands run with::

    environment: {python: "3.11", lock: uv.lock}          # uv sync --frozen
    environment: {python: "3.11", requirements: requirements.txt}
    environment: {pyproject: pyproject.toml}              # its [project] dependencies
    environment: inherit                                  # Loopline's own interpreter: TRUSTED CODE ONLY

Absent (or without a file): detected from the worktree's files (``uv.lock``, then
``requirements.txt``, then ``pyproject.toml``; none: the interpreter alone). ``sandbox`` sets
the network switch and the limits of every command.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import StrictBool, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from pipelines.schema import STRICT, check, one_of, problem

FILE_KINDS = ("lock", "requirements", "pyproject")
#: ``auto``: detect from the files; ``bare``: the interpreter alone (nothing to detect).
KINDS = ("auto", "inherit", "bare", *FILE_KINDS)
_VERSION = re.compile(r"^3\.\d{1,2}$")


def _in_repo(path: str) -> bool:
    return bool(path.strip()) and not path.startswith("/") and ".." not in path.split("/")


@dataclass(frozen=True, config=STRICT)
class EnvironmentConfig:
    """Written ``inherit`` or ``{python, lock|requirements|pyproject: path}``; held as ``kind``
    (one of :data:`KINDS`), ``file`` (for the file kinds) and ``python`` ("3.11")."""

    kind: Annotated[str, one_of(KINDS)] = "auto"
    file: str | None = None
    python: Annotated[str, check(_VERSION.match, 'expected a version such as "3.11"')] | None = None

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, raw: Any) -> Any:
        if raw == "inherit":
            return {"kind": "inherit"}
        if isinstance(raw, str | int | float | list | None):
            raise problem("expected 'inherit' or {python, lock|requirements|pyproject}")
        if not isinstance(raw, dict) or "kind" in raw:  # built in code, not read from a file
            return raw
        for key in raw:
            if key not in ("python", *FILE_KINDS):
                raise problem("unknown key", at=str(key))
        files = [k for k in FILE_KINDS if k in raw]
        if len(files) > 1:
            raise problem(f"choose one of {', '.join(files)}")
        python = raw.get("python")
        out: dict[str, Any] = {"python": str(python) if isinstance(python, float) else python}
        if files:
            path = raw[files[0]]
            if not isinstance(path, str) or not _in_repo(path):
                raise problem("must be a path inside the repository", at=files[0])
            out |= {"kind": files[0], "file": path}
        return out


def _between(low: int, high: int) -> Any:
    return check(lambda v: low <= v <= high, f"expected an integer from {low} to {high}")


@dataclass(frozen=True, config=STRICT)
class SandboxConfig:
    """The network switch and the limits of every project command (each process's own)."""

    #: Off: no network at all (not even 127.0.0.1) for unit tests, retraining and evaluation;
    #: integration tests and the app always share it (they are reached on 127.0.0.1).
    network: StrictBool = True
    memory_mb: Annotated[StrictInt, _between(64, 1 << 20)] = 4096
    cpu_seconds: Annotated[StrictInt, _between(1, 7 * 86400)] = 3600
    processes: Annotated[StrictInt, _between(16, 1 << 16)] = 512
    log_mb: Annotated[StrictInt, _between(1, 1024)] = 20
