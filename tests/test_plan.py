"""Kinds in → stages out (SPEC §4), as a table."""

from __future__ import annotations

import pytest

from pipelines.plan import CANONICAL, plan, queue_for

T = ("unit_tests", "retrain", "evaluate", "register", "integration_tests")
APP = ("unit_tests", "integration_tests")
DATA = ("validate_data", "retrain", "evaluate", "register", "integration_tests")


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
            ("validate_data", "unit_tests", "retrain", "evaluate", "register", "integration_tests", "deploy"),
        ),
        (
            ("training_code", "data"),
            True,
            False,
            ("validate_data", "unit_tests", "retrain", "evaluate", "register", "integration_tests", "deploy"),
        ),
        (("training_code", "app_code", "data"), True, True, CANONICAL),
        (
            ("training_code", "app_code", "data"),
            False,
            True,
            ("validate_data", "unit_tests", "retrain", "evaluate", "register", "integration_tests"),
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
    ("stage", "queue"),
    [("retrain", "training"), ("unit_tests", "default"), ("deploy", "default"), ("evaluate", "default")],
)
def test_training_stages_have_their_own_queue(stage: str, queue: str) -> None:
    assert queue_for(stage) == queue
