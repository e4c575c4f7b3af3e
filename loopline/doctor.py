"""``loopline doctor``: what this machine gives project commands — the sandbox mode, uv and the
interpreters environments are built from — each on one line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from workers import environments, sandbox


def report(home: Path) -> tuple[list[str], bool]:
    """Lines to print, and whether project commands run sandboxed."""
    lines = [sandbox.describe()]
    for tool in ("bwrap", "setpriv", "prlimit"):
        lines.append(f"  {tool}: {shutil.which(tool) or 'not found'}")
    try:
        uv = environments.uv_binary()
        lines.append(f"environments: {environments.uv_version()} ({uv})")
    except (ImportError, FileNotFoundError) as exc:
        lines.append(f"environments: uv is missing ({exc}): projects can only use 'environment: inherit'")
    try:
        python, version = environments.interpreter(None)
        lines.append(f"  default interpreter: Python {version} ({python})")
    except environments.EnvironmentBuildError as exc:
        lines.append(f"  {exc}")
    root = environments.root(home)
    built = [p for p in root.iterdir() if (p / environments.READY).is_file()] if root.is_dir() else []
    lines.append(f"  cache: {root} ({len(built)} built, keeps {environments.KEEP})")
    lines.append(
        f"  'environment: inherit' runs Loopline's own interpreter ({sys.executable}): trusted code only"
    )
    return lines, sandbox.mode() != "none"
