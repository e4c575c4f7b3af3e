"""``loopline explain``: the same diff, classification and plan a push would get, as a dry run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.classify import classify
from pipelines.events import ZERO_SHA
from pipelines.plan import plan
from workers.gitops import GitError, Mirror, git
from workers.projects import PROJECT_FILE, load_project


def explain_push(
    repo_path: Path, before: str, after: str, branch: str = "main", default_branch: str = "main"
) -> dict[str, Any]:
    git_dir = Path(git("rev-parse", "--absolute-git-dir", cwd=repo_path).stdout.decode().strip())
    repo = Mirror(path=git_dir, url="")
    after_sha = repo.resolve(after)
    if after_sha is None:
        raise GitError(f"unknown commit {after!r}")
    before_sha = ZERO_SHA if set(before) == {"0"} else repo.resolve(before)
    if before_sha is None:
        raise GitError(f"unknown commit {before!r}")
    base = repo.base_for(before_sha, after_sha, f"refs/heads/{default_branch}")
    project = load_project(repo.show(after_sha, PROJECT_FILE))
    classification = classify(repo.changed_files(base, after_sha), project.rules)
    planned = plan(
        classification.kinds,
        deployable=branch == default_branch,
        approval=project.deploy.approval.applies_to(branch),
    )
    return {
        **classification.to_dict(),
        "stages": list(planned.stages),
        "reason": planned.reason,
        "base": base,
        "after": after_sha,
    }
