"""Git plumbing: a bare mirror per repository, diffs and worktrees, on GitPython.

A mirror is a ``git.Repo``; its plumbing calls are ``repo.git.<command>(…)``, which run the same
git binary with an argv list, never a shell. Refs and SHAs were validated when the event was
parsed, and ``--`` separates options from revisions wherever git accepts it. Submodules are never
fetched, checked out or recursed into: a changed submodule is one changed path (its pointer).
Clones and fetches go through :func:`network`, bounded in time (see below).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from git import GitCommandError, Repo

from pipelines.classify import Change
from pipelines.errors import LooplineError
from pipelines.retry import retrying

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}

#: A Git host that accepts the connection and then stalls fails a clone or fetch in bounded time:
#: over HTTP(S) when under LOW_SPEED_LIMIT bytes/s for LOW_SPEED_TIME seconds (connecting
#: included), over SSH when not connected within CONNECT_TIMEOUT or silent for
#: 3 x CONNECT_TIMEOUT, over any protocol (git://) when not done within FETCH_TIMEOUT. A failed
#: attempt is retried with backoff, FETCH_ATTEMPTS in all.
CONNECT_TIMEOUT = 10
LOW_SPEED_LIMIT = 1000
LOW_SPEED_TIME = 30
FETCH_TIMEOUT = 600.0
FETCH_ATTEMPTS = 3


class GitError(LooplineError, RuntimeError):
    pass


def git(
    *args: str,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    # Whatever the user's git config says, never recurse into submodules (checkout, fetch).
    argv = ["git", "-c", "submodule.recurse=false"]
    if git_dir is not None:
        argv += ["--git-dir", str(git_dir)]
    argv += list(args)
    # Its own process group: on a timeout the helpers git starts (git-remote-https, ssh) go too,
    # and they hold the output pipes, so killing git alone would leave the wait unbounded.
    with subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **_GIT_ENV, **(env or {})},
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise GitError(f"git {_command(args)} timed out after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        lines = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
        raise GitError(
            f"git {_command(args)} failed: {'; '.join(lines)[:2000]}"
        )  # one line, for logs and CLI
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _command(args: tuple[str, ...]) -> str:
    """The git command's name in ``args`` (after any ``-c key=value``)."""
    rest = list(args)
    while rest[:1] == ["-c"]:
        rest = rest[2:]
    return rest[0] if rest else "?"


def network(*args: str, git_dir: Path | None = None) -> None:
    """One network command (clone, fetch) under the timeouts above."""
    bounded = ("-c", f"http.lowSpeedLimit={LOW_SPEED_LIMIT}", "-c", f"http.lowSpeedTime={LOW_SPEED_TIME}")
    env = {}
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        alive = f"-o ConnectTimeout={CONNECT_TIMEOUT} -o ServerAliveInterval={CONNECT_TIMEOUT}"
        env["GIT_SSH_COMMAND"] = f"ssh {alive} -o ServerAliveCountMax=3"
    git(*bounded, *args, git_dir=git_dir, timeout=FETCH_TIMEOUT, env=env)


@dataclass(frozen=True)
class Mirror:
    """A bare ``--mirror`` clone of a registered repository, fetched from its configured URL only."""

    path: Path
    url: str

    @cached_property
    def repo(self) -> Repo:
        """The mirror as a ``git.Repo``: git's own environment rules, never submodules."""
        repo = Repo(self.path)
        repo.git.update_environment(**_GIT_ENV)
        repo.git.set_persistent_git_options(c="submodule.recurse=false")
        return repo

    def _run(self, command: str, *args: str) -> tuple[int, bytes]:
        """``git <command> <args>`` in the mirror: its exit status and output, never raising."""
        status, out, _ = getattr(self.repo.git, command)(
            *args,
            with_extended_output=True,
            with_exceptions=False,
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
        return status, out

    def _out(self, command: str, *args: str) -> bytes:
        """``git <command> <args>``'s output; :class:`GitError` (one line) when it fails."""
        try:
            out: bytes = getattr(self.repo.git, command)(
                *args, stdout_as_string=False, strip_newline_in_stdout=False
            )
        except GitCommandError as exc:
            lines = [line.strip() for line in str(exc.stderr).splitlines() if line.strip()]
            raise GitError(f"git {command} failed: {'; '.join(lines)[:2000]}") from None
        return out

    def update(self) -> None:
        """Clone or fetch from the configured URL, retried with backoff (see FETCH_ATTEMPTS)."""
        for attempt in retrying(GitError, attempts=FETCH_ATTEMPTS, first_wait=1.0):
            with attempt:
                if not (self.path / "HEAD").exists():
                    # Cloned aside and renamed when complete, so a stopped clone leaves no mirror.
                    partial = self.path.with_name(self.path.name + ".partial")
                    shutil.rmtree(partial, ignore_errors=True)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    # No submodules, no hooks from the remote: a mirror is data, not code.
                    network("clone", "--mirror", "--no-recurse-submodules", "--", self.url, str(partial))
                    partial.rename(self.path)
                else:
                    git("remote", "set-url", "origin", self.url, git_dir=self.path)
                    network("fetch", "--prune", "--no-recurse-submodules", "origin", git_dir=self.path)

    def has_commit(self, sha: str) -> bool:
        return self._run("cat_file", "-e", f"{sha}^{{commit}}")[0] == 0

    def resolve(self, ref: str) -> str | None:
        status, out = self._run("rev_parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        return out.decode().strip() or None if status == 0 else None

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self._run("merge_base", "--is-ancestor", older, newer)[0] == 0

    def merge_base(self, a: str, b: str) -> str | None:
        status, out = self._run("merge_base", a, b)
        return out.decode().strip() or None if status == 0 else None

    def base_for(self, before: str, after: str, default_ref: str) -> str:
        """What to diff ``after`` (a commit) against for a branch push.

        - a fast-forward (a merge commit too): the previous tip, so every file the new commits
          bring counts, however many commits and whatever the payload listed;
        - a force push: the merge base of the old and new tips, i.e. everything the new history
          has that the old did not; a pure rewind (the new tip is an ancestor of the old) is
          diffed against the old tip instead, since the files it takes back change the branch;
        - a new branch (or an old tip this mirror never saw): the merge base with the default
          branch; the default branch's own first push: the empty tree (every file is new).
        """
        if set(before) != {"0"} and self.has_commit(before):
            if self.is_ancestor(before, after):
                return before
            base = self.merge_base(before, after)
            return before if base == after else base or EMPTY_TREE
        default = self.resolve(default_ref)
        if default and default != after:
            return self.merge_base(default, after) or EMPTY_TREE
        return EMPTY_TREE

    def release_base(self, commit: str, releases: Callable[[str], bool]) -> str:
        """What a release tag on ``commit`` is diffed against: the newest earlier release tag in
        its history (what this release adds since the last one), else the commit's parent."""
        parent = self.resolve(f"{commit}^")
        if parent is None:
            return EMPTY_TREE
        out = self._out(
            "for_each_ref",
            f"--merged={parent}",
            "--sort=-creatordate",
            "--format=%(refname:strip=2)%00%(objectname)",
            "refs/tags/",
        ).decode(errors="replace")
        for line in out.splitlines():
            name, _, sha = line.partition("\0")
            if releases(name):
                return self.resolve(sha) or parent
        return parent

    def changed_files(self, base: str, after: str) -> list[Change]:
        """``git diff`` between two commits, never a payload's (truncated) file lists."""
        out = self._out(
            "diff",
            "-z",
            "--name-status",
            "-M",
            "-l1000",  # bound rename detection whatever diff.renameLimit says; both paths count anyway
            "--ignore-submodules=none",  # a moved submodule pointer is a change, even if config hides it
            "--no-ext-diff",
            "--no-textconv",
            base,
            after,
            "--",
        ).decode("utf-8", errors="backslashreplace")
        return parse_name_status(out)

    def files(self, commit: str) -> list[str]:
        """Every path in the tree of ``commit``."""
        out = self._out("ls_tree", "-r", "-z", "--name-only", commit, "--")
        return [p for p in out.decode("utf-8", errors="backslashreplace").split("\0") if p]

    def show(self, commit: str, path: str) -> bytes | None:
        status, out = self._run("show", f"{commit}:{path}")
        return out if status == 0 else None

    def message(self, commit: str) -> str:
        return self._out("log", "-1", "--format=%B", commit, "--").decode(errors="replace")

    def author(self, commit: str) -> str:
        return (
            git("log", "-1", "--format=%an", commit, "--", git_dir=self.path)
            .stdout.decode(errors="replace")
            .strip()
        )

    def add_worktree(self, path: Path, commit: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out("worktree", "add", "--detach", "--force", str(path), commit)

    def remove_worktree(self, path: Path) -> None:
        self._run("worktree", "remove", "--force", str(path))
        self._run("worktree", "prune")

    def export(self, commit: str, dest: Path) -> None:
        """Write the tree of ``commit`` to ``dest`` (a release directory), without .git."""
        data = self._out("archive", "--format=tar", commit)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")


def parse_name_status(out: str) -> list[Change]:
    """Parse ``git diff -z --name-status -M``: ``STATUS\\0path\\0`` or ``RNNN\\0old\\0new\\0``."""
    fields = out.split("\0")
    changes: list[Change] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        if status[0] in "RC":
            changes.append(Change(path=fields[i + 2], status=status[0], old_path=fields[i + 1]))
            i += 3
        else:
            changes.append(Change(path=fields[i + 1], status=status[0]))
            i += 2
    return changes
