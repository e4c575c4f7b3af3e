"""The serving gateway against real model servers: weights, errors, telemetry, release actions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from service import create_app, create_gateway
from service.gateway import ROUTE_TTL, Gateway
from store.db import Database
from store.models import Deployment
from tests.conftest import ROOT, make_settings, outside_env
from tests.release_helpers import ROWS, constant_model, register
from workers import serving

TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}
BODY = {"instances": ROWS[:1]}


@dataclass
class Releases:
    db: Database
    app: Flask
    client: FlaskClient
    ids: dict[int, int]  # version → deployment id
    servers: dict[int, serving.Server]

    def set(self, **states: tuple[str, int]) -> None:
        """``v1=("active", 90)``: each release's status and traffic share."""
        with self.db.session() as s:
            for key, (status, percent) in states.items():
                dep = s.get(Deployment, self.ids[int(key[1:])])
                assert dep is not None
                dep.status, dep.traffic_percent = status, percent

    def gateway(self) -> Gateway:
        gw: Gateway = self.app.extensions["gateway"]
        return gw


@pytest.fixture
def live(tmp_path: Path, db: Database) -> Iterator[Releases]:
    """Two real model servers for model ``m``: v1 always predicts 0, v2 always predicts 1."""
    settings = make_settings(tmp_path, db_url=db.url, api_token="s3cret")
    versions = {v: register(db, settings.home, "m", v, constant_model(v - 1)) for v in (1, 2)}

    def start(version: int) -> serving.Server:
        mv = versions[version]
        log = tmp_path / f"v{version}.log"
        return serving.start(
            cwd=ROOT, command=None, model_path=Path(mv.artifact_path), sha256=mv.sha256, log_file=log
        )

    servers: dict[int, serving.Server] = {}
    try:
        with ThreadPoolExecutor(2) as pool:  # both at once: each takes seconds to import scikit-learn
            servers.update(zip((1, 2), pool.map(start, (1, 2)), strict=True))
        ids: dict[int, int] = {}
        with db.session() as s:
            for version, server in servers.items():
                dep = Deployment(
                    model_name="m",
                    version=version,
                    run_id=versions[version].run_id,
                    target="local",
                    url=server.url,
                    pid=server.pid,
                    release_dir=str(ROOT),
                    status="active" if version == 1 else "standby",
                    traffic_percent=100 if version == 1 else 0,
                )
                s.add(dep)
                s.flush()
                ids[version] = dep.id
        app = create_app({"settings": settings, "TESTING": True})
        try:
            yield Releases(db, app, app.test_client(), ids, servers)
        finally:
            app.extensions["gateway"].close()
            app.extensions["loopline"].db.dispose()
    finally:
        for server in servers.values():
            serving.stop(server.pid)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, as a scraper reads it."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def served_versions(client: FlaskClient, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        answer = client.post("/serve/m/predict", json=BODY)
        assert answer.status_code == 200, answer.text
        version = answer.headers["X-Loopline-Model-Version"]
        assert answer.json["predictions"] == [int(version) - 1]  # the body came from that release
        seen[version] += 1
    return seen


def test_weights_are_respected_and_a_switch_reaches_the_gateway_within_its_ttl(live: Releases) -> None:
    assert served_versions(live.client, 50) == {"1": 50}
    live.set(v1=("active", 80), v2=("canary", 20))
    time.sleep(ROUTE_TTL + 0.1)
    seen = served_versions(live.client, 500)
    assert 50 <= seen["2"] <= 150, seen  # expected 100; the bounds are about five standard deviations
    live.set(v1=("standby", 0), v2=("active", 100))
    time.sleep(ROUTE_TTL + 0.1)
    assert served_versions(live.client, 30) == {"2": 30}


def test_the_gateway_process_serves_predictions_and_nothing_else(live: Releases) -> None:
    """``service:create_gateway()`` (Procfile ``gateway``): /serve and /healthz, no hooks or API."""
    app = create_gateway({"settings": live.app.extensions["loopline"].settings, "TESTING": True})
    try:
        client = app.test_client()
        assert served_versions(client, 5) == {"1": 5}
        assert client.get("/healthz").json == {"status": "ok"}
        for path in ("/hooks/github", "/api/runs", "/"):
            answer = client.post(path, data=b"{}")
            assert answer.status_code in (404, 405) and "error" in answer.json, path
    finally:
        app.extensions["gateway"].close()
        app.extensions["loopline"].db.dispose()


def test_unknown_model_is_404_and_an_unreachable_release_502_both_json(live: Releases) -> None:
    missing = live.client.post("/serve/nope/predict", json=BODY)
    assert missing.status_code == 404
    assert missing.json["error"] == "no_release" and "nope" in missing.json["message"]
    live.set(v1=("standby", 0))
    time.sleep(ROUTE_TTL + 0.1)
    assert live.client.get("/serve/m/healthz").json["error"] == "no_release"

    live.set(v1=("active", 100))
    serving.stop(live.servers[1].pid)
    time.sleep(ROUTE_TTL + 0.1)
    down = live.client.post("/serve/m/predict", json=BODY)
    assert down.status_code == 502 and down.json["error"] == "bad_gateway"
    assert f"release #{live.ids[1]}" in down.json["message"]
    live.gateway().recorder.flush()
    numbers = live.client.get("/api/models/m/telemetry").json["releases"]
    v1 = next(r for r in numbers if r["version"] == 1)["telemetry"]
    assert v1["requests"] == 1 and v1["errors"] == 1 and v1["error_rate"] == 1.0


def test_paths_queries_and_release_errors_pass_through(live: Releases) -> None:
    health = live.client.get("/serve/m/healthz?probe=1")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert health.headers["X-Loopline-Release"] == str(live.ids[1])
    bad = live.client.post("/serve/m/predict", json={"rows": []})  # the release's own 400
    assert bad.status_code == 400 and bad.json["error"] == "bad_request"
    assert live.client.get("/serve/m/").json["error"] == "not_found"  # the release's 404
    live.gateway().recorder.flush()
    telemetry = live.client.get("/api/models/m/telemetry").json["releases"]
    v1 = next(r for r in telemetry if r["version"] == 1)["telemetry"]
    assert v1["requests"] == 3 and v1["errors"] == 0  # 4xx are the client's errors, not the release's


def test_telemetry_counts_predictions_and_latency_and_metrics_expose_them(live: Releases) -> None:
    live.set(v1=("active", 50), v2=("canary", 50))
    seen = served_versions(live.client, 40)
    live.gateway().recorder.flush()
    state = live.client.get("/api/models/m").json
    by_version = {r["version"]: r for r in state["releases"]}
    for version in (1, 2):
        numbers = by_version[version]["telemetry"]
        assert numbers["requests"] == seen[str(version)]
        assert numbers["predictions"] == {str(version - 1): seen[str(version)]}
        assert sum(numbers["latency_buckets"].values()) == seen[str(version)]
        assert 0 < numbers["latency_ms"]["p50"] <= numbers["latency_ms"]["p99"] < 1000
    assert by_version[2]["traffic_percent"] == 50 and by_version[2]["status"] == "canary"
    metrics = live.client.get("/metrics").text
    found = scraped(metrics)
    labels = {"model": "m", "version": "2", "release": str(live.ids[2])}
    assert found["loopline_release_requests_total", frozenset(labels.items())] == seen["2"]
    assert (
        found["loopline_release_predictions_total", frozenset({**labels, "label": "1"}.items())] == seen["2"]
    )
    assert (
        found["loopline_release_latency_seconds_bucket", frozenset({**labels, "le": "+Inf"}.items())]
        == seen["2"]
    )
    assert found["loopline_release_traffic_percent", frozenset(labels.items())] == 50
    assert "# TYPE loopline_release_latency_seconds histogram" in metrics


@contextmanager
def two_web_workers(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Path]]:
    """Loopline under gunicorn with two workers on ``db_url``: its URL, and the access log, which
    names the worker (pid) that answered each request."""
    port = serving.free_port()
    access = tmp_path / "access.log"
    (tmp_path / "none.yaml").write_text("repositories: []\n")
    env = outside_env()
    env.update(
        LOOPLINE_HOME=str(tmp_path / "home"),
        LOOPLINE_DATABASE_URL=db_url,
        LOOPLINE_CONFIG=str(tmp_path / "none.yaml"),
    )
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    argv += ["--access-logfile", str(access), "--access-logformat", "%(p)s %(U)s", "service:create_app()"]
    with (tmp_path / "gunicorn.log").open("wb") as out:
        web = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.2)
        yield url, access
    finally:
        web.terminate()
        web.wait(timeout=15)


def test_telemetry_adds_up_across_two_gunicorn_workers(tmp_path: Path, live: Releases) -> None:
    with two_web_workers(tmp_path, live.db.url) as (url, access):

        def send(n: int) -> int:
            with requests.Session() as http:
                return sum(http.post(f"{url}/serve/m/predict", json=BODY, timeout=10).ok for _ in range(n))

        def pids() -> set[str]:
            return {line.split()[0] for line in access.read_text().splitlines() if "/serve/m/predict" in line}

        sent = 0
        with ThreadPoolExecutor(6) as pool:  # six clients at once: both sync workers get some ...
            while len(pids()) < 2 and sent < 1500:  # ... though the kernel may hand one all of a round
                assert sum(pool.map(send, [25] * 6)) == 150
                sent += 150
                time.sleep(0.2)  # gunicorn writes its access log after the answer
        assert len(pids()) == 2, pids()  # the total is the sum of both workers' counts
        deadline = time.monotonic() + 10
        while True:  # each worker flushes about once a second
            numbers = requests.get(f"{url}/api/models/m/telemetry", timeout=5).json()["releases"]
            total = sum(r["telemetry"]["requests"] for r in numbers)
            if total == sent or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == sent
        found = scraped(requests.get(f"{url}/metrics", timeout=5).text)
        labels = frozenset({"model": "m", "version": "1", "release": str(live.ids[1])}.items())
        assert found["loopline_release_requests_total", labels] == sent


def test_release_actions_need_the_token_and_switch_instantly(live: Releases) -> None:
    client = live.client
    assert client.post("/api/models/m/rollback").status_code == 401
    assert client.post("/api/models/m/rollback", headers={"Authorization": "Bearer nope"}).status_code == 401
    answer = client.post("/api/models/m/rollback", json={"comment": "v1 is odd"}, headers=TOKEN)
    assert answer.status_code == 200, answer.text
    assert answer.json["aliases"]["production"] == 2
    assert [(r["version"], r["status"], r["traffic_percent"]) for r in answer.json["releases"]] == [
        (2, "active", 100),
        (1, "standby", 0),
    ]
    move = answer.json["history"][0]
    assert (move["alias"], move["to_version"], move["actor"], move["reason"]) == (
        "production",
        2,
        "user:ada",
        "v1 is odd",
    )
    time.sleep(ROUTE_TTL + 0.1)
    assert served_versions(client, 10) == {"2": 10}

    promoted = client.post("/api/models/m/versions/1/promote", headers=TOKEN)
    assert promoted.status_code == 200 and promoted.json["aliases"]["production"] == 1
    again = client.post("/api/models/m/versions/1/promote", headers=TOKEN)  # already production
    assert again.status_code == 200 and len(again.json["history"]) == len(promoted.json["history"])

    serving.stop(live.servers[2].pid)  # the standby's process is gone: the API cannot restart it
    down = client.post("/api/models/m/rollback", headers=TOKEN)
    assert down.status_code == 409 and down.json["error"] == "release_not_running"
    assert "loopline models rollback m" in down.json["message"]
    assert client.get("/api/models/m").json["aliases"]["production"] == 1  # nothing moved

    assert client.post("/api/models/m/versions/9/promote", headers=TOKEN).json["error"] == "not_found"
    assert client.post("/api/models/zz/rollback", headers=TOKEN).status_code == 404
    assert (
        client.post(
            "/api/models/m/rollback", data="[1]", headers={**TOKEN, "Content-Type": "application/json"}
        ).json["error"]
        == "bad_body"
    )
    live.set(v2=("retired", 0))
    nothing = client.post("/api/models/m/rollback", headers=TOKEN)
    assert nothing.status_code == 409 and nothing.json["error"] == "nothing_to_roll_back"


def test_release_actions_are_disabled_without_a_token(tmp_path: Path, db: Database) -> None:
    app = create_app({"settings": make_settings(tmp_path, db_url=db.url), "TESTING": True})
    answer = app.test_client().post("/api/models/m/rollback", headers=TOKEN)
    app.extensions["loopline"].db.dispose()
    assert answer.status_code == 403 and answer.json["error"] == "actions_disabled"
