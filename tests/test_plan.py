"""Kinds in → stages out (SPEC §4), as a table."""

from __future__ import annotations

import pytest

from pipelines.plan import CANONICAL, plan, queue_for, skip_requested

E = "environment"  # first whenever a stage runs the project's commands
T = (E, "unit_tests", "retrain", "evaluate", "register", "integration_tests")
APP = (E, "unit_tests", "integration_tests")
DATA = ("validate_data", E, "retrain", "evaluate", "register", "integration_tests")


@pytest.mark.parametrize(
    ("kinds", "deployable", "approval", "stages"),
    [
        (("training_code",), True, False, (*T, "deploy")),
        (("training_code",), True, True, (*T, "approval", "deploy")),
        (("training_code",), False, True, T),
        (("app_code",), True, False, (*APP, "deploy")),
        (("app_code",), True, True, (*APP, "approval", "deploy")),
        (("app_code",), False, False, APP),
        (("data",), True, False, (*DATA, "deploy")),
        (("data",), False, False, DATA),
        (("data",), True, True, (*DATA, "approval", "deploy")),
        (("training_code", "app_code"), True, False, (*T, "deploy")),
        (
            ("app_code", "data"),
            True,
            False,
            (
                "validate_data",
                E,
                "unit_tests",
                "retrain",
                "evaluate",
                "register",
                "integration_tests",
                "deploy",
            ),
        ),
        (
            ("training_code", "data"),
            True,
            False,
            (
                "validate_data",
                E,
                "unit_tests",
                "retrain",
                "evaluate",
                "register",
                "integration_tests",
                "deploy",
            ),
        ),
        (("training_code", "app_code", "data"), True, True, CANONICAL),
        (
            ("training_code", "app_code", "data"),
            False,
            True,
            ("validate_data", E, "unit_tests", "retrain", "evaluate", "register", "integration_tests"),
        ),
        ((), True, False, ()),
        ((), True, True, ()),
        (("ignore",), True, False, ()),
    ],
)
def test_plan_table(
    kinds: tuple[str, ...], deployable: bool, approval: bool, stages: tuple[str, ...]
) -> None:
    result = plan(kinds, deployable=deployable, approval=approval)
    assert result.stages == stages
    assert len(set(result.stages)) == len(result.stages)
    assert list(result.stages) == [s for s in CANONICAL if s in result.stages]


def test_empty_plan_says_why() -> None:
    assert "ignored" in plan((), deployable=True).reason


@pytest.mark.parametrize(
    ("kinds", "deployable", "approval", "stages", "reason"),
    [
        # A release tag re-deploys whatever changed since the last release, never retrains.
        (("training_code",), True, False, (E, "deploy"), "release tag: re-deploys the model"),
        (("training_code", "app_code", "data"), True, True, (E, "approval", "deploy"), "release tag"),
        ((), True, False, (E, "deploy"), "release tag"),
        (("app_code",), False, False, (), "on no deploy branch"),
        (("data",), False, True, (), "on no deploy branch"),
    ],
)
def test_release_plan_table(
    kinds: tuple[str, ...], deployable: bool, approval: bool, stages: tuple[str, ...], reason: str
) -> None:
    result = plan(kinds, deployable=deployable, approval=approval, release=True)
    assert result.stages == stages and reason in result.reason


@pytest.mark.parametrize(
    ("message", "skip"),
    [
        ("tweak [skip ci]", True),
        ("Docs\n\n[CI SKIP] only words", True),
        ("[no ci] typo", True),
        ("[loopline skip] local experiment", True),
        ("skip ci please", False),
        ("fix [skip-ci] parser", False),
    ],
)
def test_skip_markers(message: str, skip: bool) -> None:
    assert skip_requested(message) is skip


@pytest.mark.parametrize(
    ("stage", "queue"),
    [
        ("retrain", "training"),
        ("unit_tests", "default"),
        ("deploy", "default"),
        ("evaluate", "training"),
        ("register", "training"),
    ],
)
def test_training_stages_have_their_own_queue(stage: str, queue: str) -> None:
    assert queue_for(stage) == queue
