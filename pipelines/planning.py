"""Which stages an event runs, from the facts the workers read in Git: the rules for pushes
(deploy branches, skip markers), release tags and data, with no Git call of their own.

``workers.explain`` gathers the facts (the diff, the tag's branch, the commit message) and asks
these functions, so every rule is a table test in ``tests/test_planning.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipelines.config import RepoConfig
from pipelines.plan import Plan, plan, skip_requested
from pipelines.project import ProjectConfig
from pipelines.triggers import trigger_plan


def for_push(
    kinds: tuple[str, ...],
    *,
    branch: str,
    changed: bool,
    base: str,
    message: str,
    config: RepoConfig,
    project: ProjectConfig,
) -> Plan:
    """A push to ``branch``: deploys only from a deploy branch; nothing when no file changed since
    ``base`` or when the commit message carries a skip marker."""
    if not changed:
        return Plan((), f"no files changed since {base[:12]}")
    if skip_requested(message):
        return Plan((), "the commit message asks to skip CI")
    approval = project.deploy.approval.applies_to(branch)
    return plan(kinds, deployable=branch in config.branches, approval=approval)


def deploy_branch(branches: Iterable[str], holds: Callable[[str], bool]) -> str | None:
    """The first deploy branch that holds the tagged commit (``holds(branch)``), if any."""
    return next((b for b in branches if holds(b)), None)


def for_tag(kinds: tuple[str, ...], *, tag: str, branch: str | None, project: ProjectConfig) -> Plan:
    """A tag releases when it matches ``release.tags`` and its commit is on a deploy ``branch``."""
    if not project.release.releases(tag):
        patterns = ", ".join(project.release.tags) or "none"
        return Plan((), f"tag {tag} does not match release.tags ({patterns})")
    approval = project.deploy.approval.applies_to(branch)
    return plan(kinds, deployable=branch is not None, approval=approval, release=True)


def for_data(config: RepoConfig, project: ProjectConfig) -> Plan:
    """New data retrains what the default branch holds, and deploys it."""
    approval = project.deploy.approval.applies_to(config.default_branch)
    return plan(("data",), deployable=True, approval=approval)


def for_trigger(
    trigger: str, reason: str | None, *, branch: str, config: RepoConfig, project: ProjectConfig
) -> Plan:
    """A trigger runs the branch's tip as it is; it deploys only from a deploy branch."""
    approval = project.deploy.approval.applies_to(branch)
    return trigger_plan(
        trigger, reason or f"{trigger} trigger", deployable=branch in config.branches, approval=approval
    )
