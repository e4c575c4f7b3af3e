"""The canary's verdict (pure) and the deploy keys that configure it."""

from __future__ import annotations

import pytest

from pipelines.canary import judge
from pipelines.config import ConfigError
from pipelines.project import DeployConfig, parse_project_config

CONFIG = DeployConfig(
    canary_percent=10, canary_window_seconds=30, max_error_rate=0.05, max_p99_ms=500, min_requests=20
)


@pytest.mark.parametrize(
    ("requests", "errors", "p99_ms", "elapsed", "decision", "says"),
    [
        (0, 0, None, 1, "wait", "error rate 0.0% (0/0 requests)"),
        (10, 10, 30.0, 1, "wait", "error rate 100.0% (10/10 requests)"),  # too few to judge yet
        (20, 2, 30.0, 1, "rollback", "error rate 10.0% (2/20 requests) > max_error_rate 5.0%"),
        (100, 5, 30.0, 29.9, "wait", "error rate 5.0%"),
        (100, 5, 30.0, 30, "promote", "error rate 5.0% (5/100 requests) ≤ 5.0%, p99 30 ms ≤ 500 ms in 30s"),
        (100, 0, 501.0, 30, "rollback", "p99 501 ms > max_p99_ms 500"),
        (19, 0, 10.0, 30, "rollback", "only 19 requests in 30s (min_requests 20): not enough to judge"),
    ],
)
def test_verdicts(
    requests: int, errors: int, p99_ms: float | None, elapsed: float, decision: str, says: str
) -> None:
    verdict = judge(CONFIG, requests=requests, errors=errors, p99_ms=p99_ms, elapsed=elapsed)
    assert verdict.decision == decision and says in verdict.reason


def test_no_traffic_required_promotes_an_idle_canary() -> None:
    config = DeployConfig(canary_percent=10, canary_window_seconds=5, min_requests=0)
    verdict = judge(config, requests=0, errors=0, p99_ms=None, elapsed=5)
    assert verdict.decision == "promote" and "p99 n/a" in verdict.reason


def test_deploy_keys_and_defaults() -> None:
    assert parse_project_config(None).deploy == DeployConfig()
    assert DeployConfig().canary_percent == 0  # no key: promote at once, as before canaries
    deploy = parse_project_config(
        {
            "stages": {
                "deploy": {
                    "canary_percent": 10,
                    "canary_window_seconds": 60,
                    "max_error_rate": 0.01,
                    "max_p99_ms": 250,
                    "min_requests": 100,
                }
            }
        }
    ).deploy
    assert (deploy.canary_percent, deploy.canary_window_seconds, deploy.max_error_rate) == (10, 60, 0.01)
    assert (deploy.max_p99_ms, deploy.min_requests) == (250, 100)


@pytest.mark.parametrize(
    ("deploy", "key", "problem"),
    [
        ({"canary_percent": 101}, "canary_percent", "expected an integer from 0 to 100"),
        ({"canary_percent": 12.5}, "canary_percent", "expected an integer from 0 to 100"),
        ({"canary_percent": True}, "canary_percent", "expected an integer from 0 to 100"),
        ({"canary_window_seconds": 0}, "canary_window_seconds", "expected 1 to 3600"),
        ({"canary_window_seconds": "30s"}, "canary_window_seconds", "expected a number"),
        ({"max_error_rate": 5}, "max_error_rate", "expected 0 to 1"),
        ({"max_p99_ms": 0}, "max_p99_ms", "expected 1 to 600000"),
        ({"min_requests": -1}, "min_requests", "expected an integer from 0 to 1000000000"),
    ],
)
def test_bad_deploy_keys_name_the_key(deploy: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_project_config({"stages": {"deploy": deploy}}, "repo/loopline.yml")
    assert str(err.value) == f"repo/loopline.yml: stages.deploy.{key}: {problem}"
