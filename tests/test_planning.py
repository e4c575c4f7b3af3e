"""The planning rules as tables: pushes (deploy branches, skip markers), release tags, data, triggers."""

from __future__ import annotations

import pytest

from pipelines import planning
from pipelines.config import RepoConfig
from pipelines.project import parse_project_config

REPO = RepoConfig(name="churn", provider="git", match="churn", url="/x", branches=("main", "release"))
PROJECT = parse_project_config({"release": {"tags": ["v*"]}})
GUARDED = parse_project_config({"stages": {"deploy": {"approval": {"branches": ["release"]}}}})
TRAIN = ("environment", "unit_tests", "retrain", "evaluate", "register", "integration_tests")


@pytest.mark.parametrize(
    ("branch", "changed", "message", "project", "stages", "reason"),
    [
        ("main", True, "tune C", PROJECT, (*TRAIN, "deploy"), "changes: training_code"),
        ("feature", True, "tune C", PROJECT, TRAIN, "not a deploy branch"),
        ("main", False, "tune C", PROJECT, (), "no files changed since 0123456789ab"),
        ("main", True, "tune C [skip ci]", PROJECT, (), "asks to skip CI"),
        ("main", True, "WIP [CI SKIP]", PROJECT, (), "asks to skip CI"),
        ("main", True, "[loopline skip] docs", PROJECT, (), "asks to skip CI"),
        ("release", True, "tune C", GUARDED, (*TRAIN, "approval", "deploy"), "changes"),
        ("main", True, "tune C", GUARDED, (*TRAIN, "deploy"), "changes"),
    ],
)
def test_push(branch: str, changed: bool, message: str, project: object, stages: tuple, reason: str) -> None:
    planned = planning.for_push(
        ("training_code",),
        branch=branch,
        changed=changed,
        base="0123456789abcdef",
        message=message,
        config=REPO,
        project=project,  # type: ignore[arg-type]
    )
    assert planned.stages == stages and reason in planned.reason


@pytest.mark.parametrize(
    ("tag", "branch", "project", "stages", "reason"),
    [
        ("v1.2", "main", PROJECT, ("environment", "deploy"), "re-deploys the model registered"),
        ("v1.2", None, PROJECT, (), "on no deploy branch"),
        ("nightly", "main", PROJECT, (), "tag nightly does not match release.tags (v*)"),
        ("anything", "release", GUARDED, ("environment", "approval", "deploy"), "re-deploys"),
        ("anything", "main", GUARDED, ("environment", "deploy"), "re-deploys"),
    ],
)
def test_tag(tag: str, branch: str | None, project: object, stages: tuple, reason: str) -> None:
    planned = planning.for_tag(("app_code",), tag=tag, branch=branch, project=project)  # type: ignore[arg-type]
    assert planned.stages == stages and reason in planned.reason


@pytest.mark.parametrize(
    ("holding", "found"),
    [({"main", "release"}, "main"), ({"release"}, "release"), (set(), None), ({"feature"}, None)],
)
def test_deploy_branch_is_the_first_holding_the_commit(holding: set[str], found: str | None) -> None:
    assert planning.deploy_branch(REPO.branches, holding.__contains__) == found


def test_data_and_triggers() -> None:
    data = planning.for_data(REPO, GUARDED)  # the default branch, main, needs no approval
    assert data.stages == (
        "validate_data",
        "environment",
        "retrain",
        "evaluate",
        "register",
        "integration_tests",
        "deploy",
    )
    nightly = planning.for_trigger("schedule", None, branch="release", config=REPO, project=GUARDED)
    assert nightly.stages[-2:] == ("approval", "deploy") and "schedule trigger" in nightly.reason
    elsewhere = planning.for_trigger("manual", "retry", branch="feature", config=REPO, project=PROJECT)
    assert "deploy" not in elsewhere.stages
