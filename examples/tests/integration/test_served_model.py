"""Integration tests against the running model server at $LOOPLINE_SERVE_URL."""
from __future__ import annotations

import os
import time

import pytest
import requests
from sklearn.datasets import load_breast_cancer

TIMEOUT = 10.0


@pytest.fixture(scope="session")
def base_url() -> str:
    """The server's base URL; fail (not skip) if unset, and wait briefly until it is up."""
    url = os.environ.get("LOOPLINE_SERVE_URL", "").rstrip("/")
    if not url:
        pytest.fail("LOOPLINE_SERVE_URL is not set: start `python -m app.server` and point "
                    "LOOPLINE_SERVE_URL at it (e.g. http://127.0.0.1:5123)", pytrace=False)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=2).raise_for_status()
            return url
        except requests.RequestException as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"model server at {url} is not healthy: {exc}", pytrace=False)
            time.sleep(0.25)


def test_healthz(base_url: str) -> None:
    body = requests.get(f"{base_url}/healthz", timeout=TIMEOUT).json()
    assert body["status"] == "ok"
    assert len(body["model_sha256"]) == 64
    expected = os.environ.get("LOOPLINE_MODEL_SHA256")
    if expected:
        assert body["model_sha256"] == expected.lower()


def test_predict_is_accurate_on_real_rows(base_url: str) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    rows, labels = X[::3], y[::3]  # 190 real rows, both classes
    resp = requests.post(f"{base_url}/predict", json={"instances": rows.tolist()}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert len(predictions) == len(rows)
    assert set(predictions) <= {0, 1}
    accuracy = sum(int(p == t) for p, t in zip(predictions, labels, strict=True)) / len(labels)
    assert accuracy > 0.8, f"served model accuracy {accuracy:.3f} on real rows"


@pytest.mark.parametrize(
    "body",
    [{"instances": [[1.0, 2.0]]}, {"rows": []}, {"instances": [["x"] * 30]}],
)
def test_malformed_input_gives_400(base_url: str, body: object) -> None:
    resp = requests.post(f"{base_url}/predict", json=body, timeout=TIMEOUT)
    assert resp.status_code == 400
    assert "error" in resp.json()


def test_non_json_body_gives_400(base_url: str) -> None:
    resp = requests.post(f"{base_url}/predict", data="not json",
                         headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert resp.status_code == 400
