"""Outcome feedback and input sampling through the gateway, against real model servers."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from service.outcomes import HEADER
from store import outcomes
from store.models import InputSample
from tests import test_gateway
from tests.release_helpers import ROWS
from tests.test_gateway import BODY, Releases

live = test_gateway.live  # the fixture: two real model servers of model m


def predict(live: Releases, n: int) -> list[tuple[str, str]]:
    """(request id, version that answered) of ``n`` predictions through the gateway."""
    seen = []
    for _ in range(n):
        answer = live.client.post("/serve/m/predict", json=BODY)
        assert answer.status_code == 200
        seen.append((answer.headers[HEADER], answer.headers["X-Loopline-Model-Version"]))
    return seen


def telemetry(live: Releases) -> dict[int, dict[str, Any]]:
    releases = live.client.get("/api/models/m/telemetry").json["releases"]
    return {r["version"]: r["telemetry"]["online_accuracy"] for r in releases}


def test_feedback_records_online_accuracy_per_release(live: Releases) -> None:
    live.set(v1=("active", 50), v2=("canary", 50))
    answers = predict(live, 40)
    live.gateway().recorder.flush()
    per_version = Counter(version for _, version in answers)
    # the truth is 0 everywhere: v1 (always 0) is right every time, v2 (always 1) never
    body = {"feedback": [{"request_id": rid, "label": 0} for rid, _ in answers]}
    result = live.client.post("/api/models/m/feedback", json=body)
    assert result.status_code == 200 and result.json["recorded"] == 40
    accuracy = telemetry(live)
    assert accuracy[1] == {"labelled": per_version["1"], "correct": per_version["1"], "accuracy": 1.0}
    assert accuracy[2] == {"labelled": per_version["2"], "correct": 0, "accuracy": 0.0}
    again = live.client.post("/api/models/m/feedback", json={"feedback": body["feedback"][:2]}).json
    assert again["recorded"] == 0 and len(again["duplicate"]) == 2
    [fresh] = predict(live, 1)
    live.gateway().recorder.flush()
    odd = live.client.post(
        "/api/models/m/feedback",
        json={"feedback": [{"request_id": "f" * 32, "label": 1}, {"request_id": fresh[0], "labels": [0, 1]}]},
    ).json
    assert odd == {"recorded": 0, "unknown": ["f" * 32], "duplicate": [], "mismatched": [fresh[0]]}
    found = test_gateway.scraped(live.client.get("/metrics").text)
    labels = frozenset({"model": "m", "version": "2", "release": str(live.ids[2])}.items())
    assert found["loopline_release_labelled_total", labels] == per_version["2"]
    assert found["loopline_release_correct_total", labels] == 0


BAD_BODIES: list[object] = [
    None,
    [],
    {"feedback": []},
    {"feedback": [{"request_id": "x", "label": 1}]},
    {"feedback": [{"request_id": "a" * 32}]},
    {"feedback": [{"request_id": "a" * 32, "label": {"x": 1}}]},
    {"feedback": [{"request_id": "a" * 32, "labels": []}]},
    {"feedback": [{"request_id": "a" * 32, "label": 1, "extra": 2}]},
    {"feedback": [{"request_id": "a" * 32, "label": 1}] * 1001},
    {"feedback": [], "more": 1},
]


def test_bad_feedback_is_a_400_and_an_unknown_model_a_404(live: Releases) -> None:
    for body in BAD_BODIES:
        answer = live.client.post("/api/models/m/feedback", json=body)
        assert answer.status_code == 400 and answer.json["error"] == "bad_body", body
    answer = live.client.post(
        "/api/models/nope/feedback", json={"feedback": [{"request_id": "a" * 32, "label": 1}]}
    )
    assert answer.status_code == 404 and answer.json["error"] == "not_found"
    # and the gateway samples the inputs of predictions at the configured rate
    predict(live, 5)
    live.gateway().recorder.flush()  # the first flush reads the rates: none set, nothing sampled
    outcomes.set_rates(live.db, {"m": 1.0})
    live.gateway().outcomes.rates = outcomes.rates(live.db)
    predict(live, 5)
    live.client.post("/serve/m/predict", data=b"not json", headers={"Content-Type": "application/json"})
    live.gateway().recorder.flush()
    with live.db.session() as s:
        rows = list(s.query(InputSample))
    assert len(rows) == 5 and all(r.instances == ROWS[:1] and r.labels == ["0"] for r in rows)
    assert {r.deployment_id for r in rows} == {live.ids[1]}


def test_online_accuracy_adds_up_across_two_gunicorn_workers(tmp_path: Path, live: Releases) -> None:
    with test_gateway.two_web_workers(tmp_path, live.db.url) as (url, access):

        def send(n: int) -> list[str]:
            with requests.Session() as http:
                return [
                    http.post(f"{url}/serve/m/predict", json=BODY, timeout=10).headers[HEADER]
                    for _ in range(n)
                ]

        ids: list[str] = []
        pids: set[str] = set()
        for _ in range(5):  # six clients at once, until both workers answered some (the kernel
            with ThreadPoolExecutor(6) as pool:  # picks which one accepts; a busy machine may favour one)
                ids += [rid for chunk in pool.map(send, [20] * 6) for rid in chunk]
            lines = access.read_text().splitlines()
            pids = {line.split()[0] for line in lines if "/serve/m/predict" in line}
            if len(pids) == 2:
                break
        n = len(ids)
        assert n == len(set(ids)) and n % 120 == 0 and len(pids) == 2, pids
        # v1 always predicts 0: three in four true labels agree, the rest do not
        truths = [{"request_id": rid, "label": 0 if i < n * 3 // 4 else 1} for i, rid in enumerate(ids)]
        recorded, deadline = 0, time.monotonic() + 30
        while truths and time.monotonic() < deadline:  # a worker stores its answers about once a second
            # at most four parts, none empty (an empty list is a 400): the last few ids may be fewer
            parts = [part for part in (truths[i::4] for i in range(4)) if part]
            with ThreadPoolExecutor(4) as pool:
                answers = list(
                    pool.map(
                        lambda part: requests.post(
                            f"{url}/api/models/m/feedback", json={"feedback": part}, timeout=5
                        ),
                        parts,
                    )
                )
            assert all(a.status_code == 200 for a in answers), [(a.status_code, a.text) for a in answers]
            recorded += sum(a.json()["recorded"] for a in answers)
            again = {rid for a in answers for rid in a.json()["unknown"]}
            truths = [t for t in truths if t["request_id"] in again]
            time.sleep(0.3)
        assert recorded == n and not truths
        numbers = requests.get(f"{url}/api/models/m/telemetry", timeout=5).json()["releases"]
        v1 = next(r for r in numbers if r["version"] == 1)["telemetry"]["online_accuracy"]
        assert v1 == {"labelled": n, "correct": n * 3 // 4, "accuracy": 0.75}
        assert outcomes.window_accuracy(live.db, live.ids[1], 1000) == (n * 3 // 4, n)
