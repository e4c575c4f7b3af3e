"""Plan the ordered stages of a run from the kinds of change (SPEC §4).

A pure function of its inputs, so "kinds in → stages out" is a table test.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every stage in canonical order; a plan is always a subsequence of this.
CANONICAL = (
    "validate_data",  # Loopline's own check of new data: bad data fails before any build
    "environment",  # the project's environment, before any stage that runs its commands
    "unit_tests",
    "retrain",
    "evaluate",
    "register",
    "integration_tests",
    "approval",
    "deploy",
)

_BY_KIND = {
    "training_code": {"unit_tests", "retrain", "evaluate", "register", "integration_tests", "deploy"},
    "app_code": {"unit_tests", "integration_tests", "deploy"},
    "data": {"validate_data", "retrain", "evaluate", "register", "integration_tests", "deploy"},
}

#: Stages that run the project's own commands, so need its environment (built first).
COMMAND_STAGES = frozenset({"unit_tests", "retrain", "evaluate", "integration_tests", "deploy"})
#: Stages that run on the training queue, so app-code runs never wait behind a retrain. The gate
#: and the registration read what the retrain left in its worktree, so they run where it ran.
TRAINING_STAGES = frozenset({"retrain", "evaluate", "register"})
#: Commit-message markers that skip a push's run (those GitHub Actions honours, and Loopline's own).
SKIP_MARKERS = ("[skip ci]", "[ci skip]", "[no ci]", "[loopline skip]")


@dataclass(frozen=True)
class Plan:
    stages: tuple[str, ...]
    reason: str


def plan(
    kinds: tuple[str, ...] | list[str], *, deployable: bool, approval: bool = False, release: bool = False
) -> Plan:
    """Return the stages to run for ``kinds``.

    :param deployable: the ref is a configured deploy branch (for a release: the tagged commit
        is on one); otherwise the run stops after integration tests.
    :param approval: a human must approve before deploying.
    :param release: a release tag: re-deploy the model registered for the tagged commit,
        whatever changed, without retraining.
    """
    if release:
        if not deployable:
            return Plan(stages=(), reason="release tag: the tagged commit is on no deploy branch")
        stages = ("environment", "approval", "deploy") if approval else ("environment", "deploy")
        return Plan(stages=stages, reason="release tag: re-deploys the model registered for this commit")
    wanted: set[str] = set()
    for kind in kinds:
        wanted |= _BY_KIND.get(kind, set())
    if not wanted:
        return Plan(stages=(), reason="nothing to build: only ignored files changed")
    if not deployable:
        wanted.discard("deploy")
        reason = "not a deploy branch: stops after integration tests"
    else:
        reason = "changes: " + ", ".join(kinds)
        if approval:
            wanted.add("approval")
    if wanted & COMMAND_STAGES:
        wanted.add("environment")
    return Plan(stages=tuple(s for s in CANONICAL if s in wanted), reason=reason)


def skip_requested(message: str) -> bool:
    """Whether a commit message asks not to run CI for its push."""
    lowered = message.lower()
    return any(marker in lowered for marker in SKIP_MARKERS)


def queue_for(stage: str) -> str:
    return "training" if stage in TRAINING_STAGES else "default"
