"""The sandbox every project command runs in: pipeline code is untrusted (SPEC §7).

Three modes, the strongest this machine offers (:func:`mode`, shown by ``loopline doctor``):

``bwrap``
    bubblewrap: own mount, PID, IPC and UTS namespaces (optionally network); the system
    read-only, the worktree and the project's environment bound in, a private ``/tmp``, nothing
    of ``LOOPLINE_HOME`` but what the stage needs. The command runs as uid 65534: as root,
    bubblewrap sets up the namespaces and ``setpriv`` drops to that host uid inside (a uid
    mapped in a user namespace would still be host root to the files it can see); otherwise a
    user namespace maps it (and the command sees none of Loopline's files but the bound ones).
``setpriv``
    No namespaces available (a container without them) but root: the command runs as another
    uid, so it cannot read Loopline's processes' environments nor its 0600 state files.
``none``
    Neither: the command runs as Loopline, unsandboxed; said loudly at start and on every run.

Limits (address space, CPU seconds, processes: the project's ``sandbox:`` keys, see
:class:`pipelines.environment.SandboxConfig`) are set by ``prlimit`` inside the sandbox.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.environment import SandboxConfig as Limits

log = logging.getLogger(__name__)

Mode = Literal["bwrap", "setpriv", "none"]
MODES: tuple[Mode, ...] = ("bwrap", "setpriv", "none")
#: The uid (and gid) project commands run as.
SANDBOX_UID = int(os.environ.get("LOOPLINE_SANDBOX_UID") or 65534)
#: System directories bound read-only (those that exist); symlinks (merged /usr) stay symlinks.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
#: The environment's fixed variables inside the sandbox (the stage adds its own and its secrets).
#: The sandbox's own /tmp (a fresh tmpfs per command, so never shared).
PRIVATE_TMP = "/tmp"  # noqa: S108
BASE_ENV = {"LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "HOME": PRIVATE_TMP, "TMPDIR": PRIVATE_TMP}
_PASS_ENV = ("TZ", "LC_ALL")
#: Git run inside the sandbox (DVC's) sees a worktree owned by Loopline; it is the project's own.
_GIT_SAFE = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
WARNING = (
    "NO SANDBOX: project commands run as Loopline's own user and can read its secrets and state. "
    "Run only trusted code."
)


@dataclass(frozen=True)
class Box:
    """What one command may see and use."""

    worktree: Path
    #: The project environment's prefix (its ``bin`` first on PATH); ``None``: Loopline's own.
    prefix: Path | None = None
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    network: bool = True
    limits: Limits = field(default_factory=Limits)
    #: A server meant to outlive the worker that started it (a release); else the command is
    #: killed when that worker (the thread that started it) goes.
    detached: bool = False


class SandboxError(RuntimeError):
    """The sandbox cannot be set up for a command."""


@functools.cache
def mode() -> Mode:
    """The strongest mode available; ``LOOPLINE_SANDBOX`` may ask for a weaker one."""
    wanted = os.environ.get("LOOPLINE_SANDBOX", "").strip().lower()
    if wanted and wanted not in MODES:
        raise SandboxError(f"LOOPLINE_SANDBOX={wanted!r}: expected one of {', '.join(MODES)}")
    available: list[Mode] = []
    if _bwrap_works():
        available.append("bwrap")
    if _is_root() and shutil.which("setpriv"):
        available.append("setpriv")
    available.append("none")
    if wanted:
        if wanted not in available:
            raise SandboxError(f"LOOPLINE_SANDBOX={wanted}: not available here (available: {available})")
        return wanted  # type: ignore[return-value]
    return available[0]


def describe() -> str:
    """One line on the active mode, for ``loopline doctor`` and the start-up output."""
    current = mode()
    if current == "bwrap":
        how = "setpriv to host uid" if _is_root() else "user namespace, uid"
        return (
            f"sandbox: bwrap (own PID/mount/IPC namespaces, read-only system, private /tmp, "
            f"{how} {SANDBOX_UID}, limits by prlimit)"
        )
    if current == "setpriv":
        return f"sandbox: setpriv only (uid {SANDBOX_UID}; no namespaces: bubblewrap is unavailable here)"
    why = (
        "LOOPLINE_SANDBOX=none"
        if os.environ.get("LOOPLINE_SANDBOX", "").strip().lower() == "none"
        else "bubblewrap cannot create namespaces here and Loopline is not root"
    )
    return f"sandbox: none ({why}) — {WARNING}"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _bwrap_works() -> bool:
    if not shutil.which("bwrap") or not sys.platform.startswith("linux"):
        return False
    probe = [*_bwrap_args(Box(worktree=Path("/")), [], cwd=Path("/")), "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        log.warning("bubblewrap cannot create namespaces: %s", done.stderr.decode(errors="replace").strip())
    return done.returncode == 0


def environment(box: Box, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's whole environment: nothing of Loopline's (tokens, secrets) but ``extra``."""
    env = dict(BASE_ENV)
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    env.update(_GIT_SAFE)
    bindir = (box.prefix / "bin") if box.prefix else Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bindir), "/usr/local/bin", "/usr/bin", "/bin"])
    if box.prefix:
        env["VIRTUAL_ENV"] = str(box.prefix)
    env.update(extra or {})
    return env


def resolve(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with its program found on the sandbox's PATH (``python``: the environment's)."""
    program = shutil.which(argv[0], path=env["PATH"])
    if program is None:
        raise FileNotFoundError(f"{argv[0]!r} is not on the command's PATH ({env['PATH']})")
    return [program, *argv[1:]]


def wrap(argv: list[str], box: Box, *, cwd: Path) -> list[str]:
    """The argv that runs ``argv`` in ``box`` with its limits, in the active mode."""
    limited = [*_prlimit(box.limits), *argv] if shutil.which("prlimit") else argv
    current = mode()
    if current == "bwrap":
        return _bwrap_args(box, _setpriv() if _is_root() else [], cwd=cwd) + limited
    if current == "setpriv":
        return _setpriv() + limited
    return limited


def prepare(box: Box) -> None:
    """Let the sandbox's uid write where the box allows (root modes only): group-own the paths
    and make them group-writable. The owner stays Loopline (git refuses worktrees owned by
    another user, rightly); setgid directories keep new files in the group."""
    if mode() == "none" or not _is_root():
        return
    for top in (box.worktree, *box.write):
        if top.exists():
            _share(top)


def _share(top: Path) -> None:
    def fix(path: str, is_dir: bool) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        wanted = st.st_mode | stat.S_IRGRP | stat.S_IWGRP | (stat.S_IXGRP | stat.S_ISGID if is_dir else 0)
        if st.st_gid != SANDBOX_UID:
            os.lchown(path, -1, SANDBOX_UID)
        if stat.S_IMODE(st.st_mode) != stat.S_IMODE(wanted):
            os.chmod(path, stat.S_IMODE(wanted))

    fix(str(top), True)
    for root, dirs, files in os.walk(top):
        for name in dirs:
            fix(os.path.join(root, name), True)
        for name in files:
            fix(os.path.join(root, name), False)


def _setpriv() -> list[str]:
    return [
        "setpriv",
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def _prlimit(limits: Limits) -> list[str]:
    mem = limits.memory_mb * 1024 * 1024
    # CPU: SIGXCPU at the limit (the log says why), SIGKILL shortly after if ignored.
    cpu = f"{limits.cpu_seconds}:{limits.cpu_seconds + 5}"
    return ["prlimit", f"--as={mem}", f"--cpu={cpu}", f"--nproc={limits.processes}", "--core=0", "--"]


def _bwrap_args(box: Box, inner: list[str], *, cwd: Path) -> list[str]:
    args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not box.detached:
        args.append("--die-with-parent")
    if not box.network:
        args.append("--unshare-net")
    if not _is_root():
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    bound: list[Path] = []
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
            bound.append(path)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/dev/shm", "--perms", "1777", "--tmpfs", PRIVATE_TMP]  # noqa: S108
    bound.append(Path(PRIVATE_TMP))
    binds: list[tuple[str, Path]] = []
    for prefix in _interpreters(box):
        binds.append(("--ro-bind", prefix))
    binds += [("--ro-bind", p) for p in box.read]
    binds += [("--bind", p) for p in box.write]
    if box.worktree != Path("/"):
        binds.append(("--bind", box.worktree))
        if (box.worktree / ".git").is_file():  # the pointer to Loopline's mirror stays as it is
            binds.append(("--ro-bind", box.worktree / ".git"))
    made: set[Path] = set()
    for how, path in sorted(set(binds), key=lambda b: (len(b[1].parts), b[0] == "--bind")):
        if not path.exists():
            continue
        for parent in reversed(path.parents):
            if parent in made or parent == Path("/") or _under_system(parent) or parent in bound:
                continue
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(parent)
        args += [how, str(path), str(path)]
        bound.append(path)
    args += ["--chdir", str(cwd), "--"]
    return args + inner


def _interpreters(box: Box) -> Iterable[Path]:
    """The prefixes a command's interpreter needs: the environment and the Python it was made
    from (or Loopline's own, for ``inherit``)."""
    prefixes = {Path(sys.base_prefix)}
    if box.prefix is None:
        prefixes.add(Path(sys.prefix))
    else:
        prefixes.add(box.prefix)
        base = _base_of(box.prefix)
        if base is not None:
            prefixes.add(base)
    return sorted(p for p in prefixes if not _under_system(p))


def _base_of(prefix: Path) -> Path | None:
    """The base interpreter's prefix of a virtual environment (``home`` in ``pyvenv.cfg``)."""
    try:
        for line in (prefix / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).resolve().parent
    except OSError:
        return None
    return None


def _under_system(path: Path) -> bool:
    return any(path == Path(d) or path.is_relative_to(d) for d in SYSTEM_DIRS)
