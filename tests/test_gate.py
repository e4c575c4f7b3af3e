"""The evaluation gate's decision and its configuration, as tables (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.config import ConfigError
from pipelines.gate import judge
from pipelines.project import ApprovalConfig, GateConfig, Threshold, parse_project_config

MULTI = GateConfig(
    metric="accuracy",
    min=0.8,
    max_drop_vs_production=0.02,
    thresholds=(("roc_auc", Threshold(min=0.9)), ("log_loss", Threshold(max=0.4))),
)
GOOD = {"accuracy": 0.95, "roc_auc": 0.99, "log_loss": 0.1}


@pytest.mark.parametrize(
    ("gate", "candidate", "production", "passed", "failed_checks", "verdict"),
    [
        # the SPEC's single-metric form
        (GateConfig(min=0.8), {"accuracy": 0.9}, None, True, [], "passed: accuracy=0.9000 ≥ min 0.8000"),
        (GateConfig(min=0.8), {"accuracy": 0.7}, None, False, [("min", "accuracy")], "accuracy=0.7000 < min"),
        (GateConfig(min=0.8), {"accuracy": 0.8}, None, True, [], "≥ min 0.8000"),  # the bound is inclusive
        (
            GateConfig(min=0.8, max_drop_vs_production=0.02),
            {"accuracy": 0.95},
            {"accuracy": 0.96},
            True,
            [],
            "accuracy 0.9500 vs production 0.9600 (Δ -0.0100, allowed drop 0.0200)",
        ),
        (
            GateConfig(min=0.8, max_drop_vs_production=0.0),
            {"accuracy": 0.95},
            {"accuracy": 0.96},
            False,
            [("max_drop_vs_production", "accuracy")],
            "failed: accuracy 0.9500 vs production 0.9600 (Δ -0.0100) drops more than the allowed 0.0000",
        ),
        # no production: the absolute thresholds alone decide
        (GateConfig(max_drop_vs_production=0.0), {"accuracy": 0.5}, None, True, [], "no thresholds"),
        (GateConfig(metric="f1", min=0.5), {"accuracy": 0.95}, None, False, [("min", "f1")], "f1 is missing"),
        (GateConfig(metric="f1"), {"accuracy": 0.95}, None, False, [("present", "f1")], "f1 is missing"),
        (GateConfig(metric="scores.auc", min=0.5), {"scores.auc": 0.6}, None, True, [], "scores.auc=0.6000"),
        # several metrics, min and max
        (MULTI, GOOD, None, True, [], "roc_auc=0.9900 ≥ min 0.9000; log_loss=0.1000 ≤ max 0.4000"),
        (MULTI, GOOD, {"accuracy": 0.96}, True, [], "vs production 0.9600"),
        (
            MULTI,
            {**GOOD, "log_loss": 0.65},
            None,
            False,
            [("max", "log_loss")],
            "failed: log_loss=0.6500 > max 0.4000",
        ),
        (
            MULTI,
            {"accuracy": 0.63, "roc_auc": 0.98, "log_loss": 0.65},
            {"accuracy": 0.98},
            False,
            [("min", "accuracy"), ("max", "log_loss"), ("max_drop_vs_production", "accuracy")],
            "accuracy=0.6300 < min 0.8000; log_loss=0.6500 > max 0.4000; accuracy 0.6300 vs production",
        ),
        (MULTI, {"accuracy": 0.95, "log_loss": 0.1}, None, False, [("min", "roc_auc")], "roc_auc is missing"),
        (  # thresholds on other metrics: the default `accuracy` need not exist
            GateConfig(thresholds=(("loss", Threshold(min=0.1, max=0.3)),)),
            {"loss": 0.35},
            None,
            False,
            [("max", "loss")],
            "loss=0.3500 > max 0.3000",
        ),
    ],
)
def test_judge(
    gate: GateConfig,
    candidate: dict[str, float],
    production: dict[str, float] | None,
    passed: bool,
    failed_checks: list[tuple[str, str]],
    verdict: str,
) -> None:
    result = judge(gate, candidate, production)
    assert result["passed"] is passed
    assert [(c["check"], c["metric"]) for c in result["checks"] if not c["passed"]] == failed_checks
    assert verdict in result["verdict"], result["verdict"]
    assert result["verdict"].startswith("passed: " if passed else "failed: ")


def test_judge_records_every_number_it_compared() -> None:
    production = {"accuracy": 0.96, "roc_auc": 0.995}
    result = judge(MULTI, GOOD, production, against="production v3 on the same data")
    assert result["value"] == 0.95 and result["production_value"] == 0.96
    drop = next(c for c in result["checks"] if c["check"] == "max_drop_vs_production")
    assert drop == {
        "check": "max_drop_vs_production",
        "metric": "accuracy",
        "value": 0.95,
        "production": 0.96,
        "delta": pytest.approx(-0.01),
        "max_drop": 0.02,
        "threshold": pytest.approx(0.94),
        "passed": True,
    }
    assert [(c["check"], c["metric"], c["threshold"]) for c in result["checks"][:3]] == [
        ("min", "accuracy", 0.8),
        ("min", "roc_auc", 0.9),
        ("max", "log_loss", 0.4),
    ]
    assert "vs production v3 on the same data 0.9600" in result["verdict"]


def test_gate_config_forms() -> None:
    single = parse_project_config({"gate": {"metric": "f1", "min": 0.7, "max_drop_vs_production": 0}}).gate
    assert single == GateConfig(metric="f1", min=0.7, max_drop_vs_production=0.0)
    multi = parse_project_config(
        {
            "gate": {
                "metric": "accuracy",
                "min": 0.8,
                "thresholds": {"roc_auc": {"min": 0.9}, "log_loss": {"max": 0.4}},
                "compare": "python -m src.eval",
            }
        }
    ).gate
    assert multi.bounds() == (
        ("accuracy", Threshold(min=0.8)),
        ("roc_auc", Threshold(min=0.9)),
        ("log_loss", Threshold(max=0.4)),
    )
    assert multi.compare == "python -m src.eval"


@pytest.mark.parametrize(
    ("raw", "approval"),
    [
        (None, ApprovalConfig()),
        ("none", ApprovalConfig()),
        ("required", ApprovalConfig(required=True)),
        ({"branches": ["main"]}, ApprovalConfig(required=True, branches=("main",))),
        ({"required": True, "expires_after": "24h"}, ApprovalConfig(required=True, expires_after=86400)),
        ({"expires_after": "30m"}, ApprovalConfig(required=True, expires_after=1800)),
        ({"expires_after": 90}, ApprovalConfig(required=True, expires_after=90)),
        ({"expires_after": "1.5d"}, ApprovalConfig(required=True, expires_after=129600)),
        ({"required": False, "branches": ["main"]}, ApprovalConfig(branches=("main",))),
    ],
)
def test_approval_config_forms(raw: Any, approval: ApprovalConfig) -> None:
    assert parse_project_config({"stages": {"deploy": {"approval": raw}}}).deploy.approval == approval


@pytest.mark.parametrize(
    ("approval", "branch", "applies"),
    [
        (ApprovalConfig(), "main", False),
        (ApprovalConfig(required=True), "main", True),
        (ApprovalConfig(required=True), "release", True),
        (ApprovalConfig(required=True, branches=("main",)), "main", True),
        (ApprovalConfig(required=True, branches=("main",)), "release", False),
        (ApprovalConfig(required=True, branches=("main",)), None, False),
    ],
)
def test_approval_applies_to(approval: ApprovalConfig, branch: str | None, applies: bool) -> None:
    assert approval.applies_to(branch) is applies


A = "stages.deploy.approval"


def approving(value: Any) -> dict[str, Any]:
    return {"stages": {"deploy": {"approval": value}}}


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"gate": {"threshold": {}}}, "gate.threshold", "unknown key"),
        ({"gate": {"thresholds": ["auc"]}}, "gate.thresholds", "mapping"),
        ({"gate": {"thresholds": {"auc": {"above": 1}}}}, "gate.thresholds.auc", "min: number"),
        ({"gate": {"thresholds": {"auc": {}}}}, "gate.thresholds.auc", "min: number"),
        ({"gate": {"thresholds": {"auc": {"min": "x"}}}}, "gate.thresholds.auc.min", "number"),
        ({"gate": {"thresholds": {"auc": {"min": 0.9, "max": 0.1}}}}, "gate.thresholds.auc", "above max"),
        ({"gate": {"max_drop_vs_production": -0.1}}, "gate.max_drop_vs_production", ">= 0"),
        ({"gate": {"compare": ""}}, "gate.compare", "non-empty string"),
        (approving("maybe"), A, "must be"),
        (approving({"who": "ada"}), f"{A}.who", "unknown key"),
        (approving({"required": "yes"}), f"{A}.required", "true"),
        (approving({"branches": "main"}), f"{A}.branches", "list"),
        (approving({"expires_after": "soon"}), f"{A}.expires_after", "duration"),
        (approving({"expires_after": "0h"}), f"{A}.expires_after", "positive"),
    ],
)
def test_gate_and_approval_errors(raw: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_project_config(raw, "repo/loopline.yml")
    assert info.value.key == key and problem in info.value.problem, str(info.value)
