"""``loopline explain``: the same diff, classification and plan a push would get, as a dry run.

It calls the very functions the intake calls (:mod:`workers.explain`), on a local repository
instead of a mirror, so what it prints is what a real run would record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import RepoConfig
from pipelines.events import ZERO_SHA, Event, valid_ref
from workers.explain import explain, locate
from workers.gitops import GitError, Mirror, git
from workers.projects import project_from


def explain_push(
    repo_path: Path,
    before: str | None,
    after: str,
    *,
    branch: str = "main",
    tag: str | None = None,
    deploy_branches: tuple[str, ...] = ("main",),
) -> dict[str, Any]:
    """Explain a push of ``after`` (a commit or any ref) to ``branch``, or of tag ``tag``.

    ``before`` empty or all zeros means a new branch: compared with the default branch (the
    first of ``deploy_branches``) at their merge base, as the intake does.
    """
    proc = git("rev-parse", "--absolute-git-dir", cwd=repo_path, check=False)
    if proc.returncode != 0:
        raise GitError(f"{repo_path} is not a git repository")
    repo = Mirror(path=Path(proc.stdout.decode().strip()), url="")
    ref = f"refs/tags/{tag}" if tag else f"refs/heads/{branch}"
    if not valid_ref(ref):
        raise GitError(f"invalid {'tag' if tag else 'branch'} name {(tag or branch)!r}")
    after_sha = repo.resolve(after)
    if after_sha is None:
        raise GitError(f"unknown commit {after!r}")
    before_sha = ZERO_SHA if not before or set(before) == {"0"} else repo.resolve(before)
    if before_sha is None:
        raise GitError(f"unknown commit {before!r}")
    config = RepoConfig(
        name="local", provider="git", match="local", url=str(repo.path), branches=deploy_branches
    )
    event = Event(
        type="tag" if tag else "push", repository="local", ref=ref, before=before_sha, after=after_sha
    )
    ref, commit = locate(repo, config, event)
    return explain(repo, config, project_from(repo, commit), [event], ref, commit).to_dict()
