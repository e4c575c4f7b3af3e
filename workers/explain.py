"""What an event means: the diff against the right base, each file's kind and the rule that gave
it, and the stages that would run.

The intake records exactly what :func:`explain` returns and ``loopline explain`` prints it, so a
dry run and a real run can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines import planning
from pipelines.classify import Classification, FileClass, classify
from pipelines.config import RepoConfig
from pipelines.events import TRIGGERS, DataObject, Event
from pipelines.plan import Plan
from pipelines.project import ProjectConfig
from workers.gitops import GitError, Mirror


@dataclass(frozen=True)
class Explanation:
    ref: str
    commit: str
    base: str | None  # what the commit was diffed against (None for data)
    classification: Classification
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.classification.to_dict(),
            "stages": list(self.plan.stages),
            "reason": self.plan.reason,
            "ref": self.ref,
            "base": self.base,
            "commit": self.commit,
        }


def locate(repo: Mirror, config: RepoConfig, event: Event) -> tuple[str, str]:
    """The ref and the commit an event is about (a tag is peeled to its commit)."""
    if event.type == "data":  # new data retrains what the default branch holds now
        default = f"refs/heads/{config.default_branch}"
        commit = repo.resolve(default)
        if commit is None:
            raise GitError(f"branch {config.default_branch!r} does not exist yet; push code first")
        return default, commit
    if event.type in TRIGGERS:  # a trigger runs the branch's tip as it is now
        ref = event.ref or f"refs/heads/{config.default_branch}"
        commit = repo.resolve(ref)
        if commit is None:
            raise GitError(f"branch {ref.removeprefix('refs/heads/')!r} does not exist")
        return ref, commit
    assert event.ref and event.after
    commit = repo.resolve(event.after)
    if commit is None:
        raise GitError(f"commit {event.after} is not in {config.url or repo.path} (yet)")
    return event.ref, commit


def explain(
    repo: Mirror,
    config: RepoConfig,
    project: ProjectConfig,
    events: list[Event],
    ref: str,
    commit: str,
    *,
    objects: list[DataObject] | None = None,
    since: str | None = None,
) -> Explanation:
    """Classify and plan ``events`` (one push or tag, or a burst of data drops) at ``commit``.

    :param objects: for data, the objects the run fetches (default: every object of the events).
    :param since: for a push, the commit of the branch's last finished run, when it is an
        ancestor: diffing against it keeps the changes of superseded pushes in the plan.
    """
    first = events[0]
    if first.type == "data":
        wanted = objects if objects is not None else [o for e in events for o in e.objects]
        files = tuple(
            FileClass(f"{project.data_into}/{o.path or o.key}", "A", "data", f"data_lake: {o.url}")
            for o in wanted
        )
        classification = Classification(files=files, kinds=("data",))
        return Explanation(ref, commit, None, classification, planning.for_data(config, project))
    if first.type in TRIGGERS:  # nothing changed: the trigger's reason is the plan's
        branch = ref.removeprefix("refs/heads/")
        planned = planning.for_trigger(
            first.type, first.reason, branch=branch, config=config, project=project
        )
        return Explanation(ref, commit, None, Classification(files=(), kinds=()), planned)
    if first.type == "tag":
        base = repo.release_base(commit, project.release.releases)
        classification = classify(repo.changed_files(base, commit), project.rules)
        holder = planning.deploy_branch(
            config.branches, lambda b: repo.is_ancestor(commit, f"refs/heads/{b}")
        )
        planned = planning.for_tag(
            classification.kinds, tag=ref.removeprefix("refs/tags/"), branch=holder, project=project
        )
        return Explanation(ref, commit, base, classification, planned)
    assert first.before is not None
    base = since or repo.base_for(first.before, commit, f"refs/heads/{config.default_branch}")
    classification = classify(repo.changed_files(base, commit), project.rules)
    planned = planning.for_push(
        classification.kinds,
        branch=ref.removeprefix("refs/heads/"),
        changed=bool(classification.files),
        base=base,
        message=repo.message(commit) if classification.files else "",
        config=config,
        project=project,
    )
    return Explanation(ref, commit, base, classification, planned)
