"""Seed data and a live server for the dashboard tests (real Flask app, real store, real port).

Also runnable by hand to look at the dashboard with realistic data::

    python tests/dashboard_fixtures.py /tmp/loopline-dash
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from werkzeug.serving import make_server

from config.settings import Settings
from pipelines.gate import judge
from pipelines.project import GateConfig
from store import aliases, datasets, telemetry, users
from store.db import Database
from store.models import Delivery, Deployment, ModelVersion, Run, Stage

#: Hostile strings planted in the seeded data; the page must show them as text.
XSS_REASON = '<img src=x onerror="document.body.dataset.pwned=1">'
XSS_STAGE = "<svg onload=alert(1)>"
XSS_LOG = "<script>document.body.dataset.pwned=2</script> stage output"
XSS_PATH = 'data/<b onclick="x()">batch</b>.csv'
XSS_BRANCH = "refs/heads/feat/<i>x</i>"

DEPLOY_URL = "http://127.0.0.1:9301/predict"
FLOWER_URL = "http://127.0.0.1:5555"
RETRAIN_TASK = "loopline-run12-retrain-5f3a9c01"
#: What the waiting run's approval stage names (see workers/steps/approval.py).
APPROVAL_NAMES = {
    "commit": "9f2c1e7a" * 5,
    "model": "fraud-detector",
    "model_version": 2,
    "sha256": "5e" * 32,
    "requested_at": "2024-06-01T10:00:00+00:00",
    "expires_at": "2099-01-01T00:00:00+00:00",
}
LIVE_LOG = "epoch 3/10 loss=0.231\nepoch 4/10 loss=0.198\n"
#: The app-code run that re-released iris-classifier v5 was approved by a named user.
APPROVED = {
    "commit": "a9" * 20,
    "model": "iris-classifier",
    "model_version": 5,
    "sha256": "77" * 32,
    "requested_at": "2024-06-01T10:00:00+00:00",
    "decision": "approved",
    "by": "ann",
    "at": "2024-06-01T10:01:00+00:00",
    "comment": "app change only, same model",
}
#: The drift per feature that the data run's validate_data stage found.
DRIFT = {"sepal_length": 0.41, "sepal_width": 0.12, "petal_length": 3.62, "petal_width": 1.87}
#: What the seeded pushes' commits say (run 6's message comes from its delivery instead).
MESSAGES = {
    1: "Train a random forest on the iris data",
    2: "More trees: 200",
    4: "Try shallower trees",
    5: "Wider trees on a branch",
    7: "predict: reject rows of the wrong width",
    9: "Docs: a page per endpoint",
    10: "Serve predictions with their probabilities",
    11: "Tune the learning schedule",
    12: "Add the June batch and a feature",
    13: "Log request ids",
}
#: People with tokens (``store/users.py``), by role.
USERS = {"viewer": "vic", "approver": "ann", "admin": "root"}


def settings_for(home: Path, api_token: str | None = None) -> Settings:
    return Settings(
        home=home,
        config_path=home / "loopline.yaml",
        database_url=f"sqlite:///{home / 'loopline.db'}",
        broker_url=f"redis+socket://{home / 'redis.sock'}",
        api_token=api_token,
        flower_url=FLOWER_URL,
    )


def sha(text: str, n: int = 40) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class StageSpec:
    name: str
    status: str
    seconds: float | None = None
    log: str = ""
    detail: dict[str, Any] | None = None
    exit_code: int | None = None


def _stages(specs: list[StageSpec], start: datetime) -> list[Stage]:
    out, t = [], start
    for i, spec in enumerate(specs):
        started = t if spec.status not in ("queued", "skipped") else None
        finished = t + timedelta(seconds=spec.seconds) if started and spec.seconds is not None else None
        exit_code = spec.exit_code
        if exit_code is None and finished:
            exit_code = 0 if spec.status == "succeeded" else 1
        out.append(
            Stage(
                name=spec.name,
                position=i,
                status=spec.status,
                started_at=started,
                finished_at=finished,
                exit_code=exit_code,
                log=spec.log,
                detail=spec.detail,
            )
        )
        if finished:
            t = finished
    return out


def _gate(
    value: float, production: float | None, prod_version: int | None, minimum: float = 0.8
) -> dict[str, Any]:
    """An evaluate stage's detail, decided by the real gate."""
    gate = GateConfig(metric="accuracy", min=minimum, max_drop_vs_production=0.01)
    same_data = None if production is None else {"accuracy": production}
    result = judge(
        gate, {"accuracy": value}, same_data, against=f"production v{prod_version} on the same data"
    )
    return {
        **result,
        "metrics": {"accuracy": value, "f1_macro": round(value - 0.012, 4), "loss": round(1 - value, 4)},
        "production_version": prod_version,
        "production": None
        if production is None
        else {"version": prod_version, "source": "same_data", "metrics": same_data},
    }


def _classification(files: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    kinds = sorted({k for _, _, k, _ in files if k != "ignore"})
    return {"files": [{"path": p, "status": s, "kind": k, "rule": r} for p, s, k, r in files], "kinds": kinds}


TRAIN_LOG = (
    "$ dvc repro\nRunning stage 'prepare':\n> python src/prepare.py\nRunning stage 'train':\n"
    "> python src/train.py\nfitting RandomForestClassifier(n_estimators=200)\ndone in 14.2s\n"
)


def seed(db: Database, release_url: str = DEPLOY_URL) -> dict[str, Any]:
    """A realistic history: deployed iris versions, a failed gate, a running hostile run, every status."""
    now = datetime.now(UTC)
    repo, other = "iris-demo", "fraud-detector"
    train_files = _classification(
        [
            ("src/train.py", "M", "training_code", "classify.training_code[0]: src/**"),
            ("params.yaml", "M", "training_code", "dvc.yaml: stages.train.params: params.yaml"),
            ("README.md", "M", "ignore", "default: **/*.md"),
        ]
    )
    data_files = _classification([("data/raw/iris-2024-06.csv", "A", "data", "data_lake: folder /srv/lake")])
    accuracies = [0.912, 0.934, 0.951, 0.947, 0.962]
    runs: list[Run] = []

    def add_run(i: int, **kw: Any) -> Run:
        created = now - timedelta(minutes=[0, 4320, 2880, 1500, 1400, 600, 200, 95, 80, 42, 30, 6, 1, 150][i])
        specs: list[StageSpec] = kw.pop("specs")
        status = kw.pop("status")
        started = created + timedelta(seconds=3) if status not in ("queued", "skipped") else None
        run = Run(
            repository=kw.pop("repository", repo),
            ref=kw.pop("ref", "refs/heads/main"),
            commit=sha(f"commit{i}"),
            before=sha(f"commit{i - 1}"),
            trigger=kw.pop("trigger", "push"),
            status=status,
            dedupe_key=f"seed-{i}",
            message=kw.pop("message", MESSAGES.get(i)),
            author=kw.pop("author", "Ada Lovelace" if i in MESSAGES else None),
            created_at=created,
            started_at=started,
            plan=[s.name for s in specs],
            **kw,
        )
        run.stages = _stages(specs, started or created)
        if status not in ("running", "queued", "awaiting_approval") and run.stages:
            ends = [s.finished_at for s in run.stages if s.finished_at]
            run.finished_at = max(ends) if ends else created + timedelta(seconds=1)
        elif status == "skipped":
            run.finished_at = created
        runs.append(run)
        return run

    def training(
        i: int, acc: float, prod: float | None, prod_v: int | None, *, deploy: bool = True
    ) -> list[StageSpec]:
        gate = _gate(acc, prod, prod_v)
        passed = gate["passed"]
        rest = "succeeded" if passed else "skipped"
        specs = [
            StageSpec("unit_tests", "succeeded", 4.2, "collected 12 items\n12 passed in 3.9s\n"),
            StageSpec("retrain", "succeeded", 41.5, TRAIN_LOG),
            StageSpec(
                "evaluate", "succeeded" if passed else "gate_failed", 2.1, f"gate: {gate['verdict']}\n", gate
            ),
            StageSpec(
                "register",
                rest,
                0.8 if passed else None,
                f"registered iris-classifier v{i}\n" if passed else "",
            ),
            StageSpec("integration_tests", rest, 6.3 if passed else None, "3 passed\n" if passed else ""),
        ]
        if deploy:
            detail = {"model": "iris-classifier", "version": i, "url": DEPLOY_URL} if passed else None
            specs.append(
                StageSpec(
                    "deploy",
                    rest,
                    1.4 if passed else None,
                    f"serving at {DEPLOY_URL}\n" if passed else "",
                    detail,
                )
            )
        return specs

    r1 = add_run(
        1,
        kinds=["training_code"],
        classification=train_files,
        reason="changes: training_code",
        status="succeeded",
        specs=training(1, accuracies[0], None, None),
        model_version=1,
    )
    r2 = add_run(
        2,
        kinds=["training_code"],
        classification=train_files,
        reason="changes: training_code",
        status="succeeded",
        specs=training(2, accuracies[1], accuracies[0], 1),
        model_version=2,
    )
    r3 = add_run(
        3,
        kinds=["data"],
        classification=data_files,
        trigger="data",
        reason="changes: data",
        status="succeeded",
        model_version=3,
        specs=[
            StageSpec(
                "validate_data",
                "succeeded",
                1.1,
                "iris-2024-06.csv: ok\n",
                {
                    "files": [
                        {
                            "file": "iris-2024-06.csv",
                            "rows": 150,
                            "columns": 5,
                            "problems": [],
                            "drift": DRIFT,
                            "drifted": ["petal_length"],
                        }
                    ],
                    "reference_files": ["iris.csv"],
                    "drift_limit": 3.0,
                },
            ),
            *training(3, accuracies[2], accuracies[1], 2)[1:],
        ],
    )
    r4 = add_run(
        4,
        kinds=["training_code"],
        classification=train_files,
        reason="changes: training_code",
        status="gate_failed",
        specs=training(4, 0.903, accuracies[2], 3),
    )
    r5 = add_run(
        5,
        kinds=["training_code"],
        classification=train_files,
        reason="not a deploy branch",
        ref="refs/heads/experiment/wider-trees",
        status="succeeded",
        model_version=4,
        specs=training(4, accuracies[3], accuracies[2] - 0.01, 3, deploy=False),
    )
    r6 = add_run(
        6,
        kinds=["training_code"],
        classification=train_files,
        reason="changes: training_code",
        status="succeeded",
        specs=training(5, accuracies[4], accuracies[2], 3),
        model_version=5,
    )
    app_run = add_run(
        13,
        message="Serve: answer 422 for rows of the wrong width",
        author="Grace Hopper",
        kinds=["app_code"],
        reason="changes: app_code",
        status="succeeded",
        classification=_classification([("app/serve.py", "M", "app_code", "classify.app_code[0]: app/**")]),
        specs=[
            StageSpec("unit_tests", "succeeded", 3.0),
            StageSpec("integration_tests", "succeeded", 6.0),
            StageSpec("approval", "succeeded", 60.0, detail={**APPROVED, "commit": sha("commit13")}),
            StageSpec("deploy", "succeeded", 9.0),
        ],
    )
    add_run(
        7,
        repository=other,
        kinds=["app_code"],
        reason="changes: app_code",
        status="failed",
        classification=_classification([("app/serve.py", "M", "app_code", "classify.app_code[0]: app/**")]),
        specs=[
            StageSpec("unit_tests", "failed", 7.9, "FAILED tests/test_api.py::test_predict - KeyError\n"),
            StageSpec("integration_tests", "skipped"),
            StageSpec("deploy", "skipped"),
        ],
    )
    docs_only = add_run(
        8,
        repository=other,
        kinds=[],
        reason="nothing to build: only ignored files changed",
        status="skipped",
        # A huge docs-only push: the run view lists the first files and says how many more.
        classification=_classification(
            [(f"docs/page-{n:04}.md", "M", "ignore", "classify.ignore[0]: docs/**") for n in range(620)]
        ),
        specs=[],
    )
    waiting = add_run(
        9,
        repository=other,
        kinds=["app_code"],
        reason="changes: app_code",
        status="awaiting_approval",
        classification=_classification([("app/serve.py", "M", "app_code", "classify.app_code[0]: app/**")]),
        specs=[
            StageSpec("unit_tests", "succeeded", 5.0),
            StageSpec("integration_tests", "succeeded", 8.0),
            StageSpec("approval", "awaiting_approval", detail=APPROVAL_NAMES),
            StageSpec("deploy", "queued"),
        ],
    )
    add_run(
        10,
        kinds=["training_code"],
        classification=train_files,
        reason="cancelled by admin",
        status="cancelled",
        specs=[
            StageSpec("unit_tests", "succeeded", 4.0),
            StageSpec("retrain", "cancelled", 12.0),
            StageSpec("evaluate", "skipped"),
            StageSpec("register", "skipped"),
        ],
    )
    hostile = add_run(
        11,
        ref=XSS_BRANCH,
        kinds=["training_code", "data"],
        reason=XSS_REASON,
        status="running",
        classification=_classification(
            [
                (XSS_PATH, "A", "data", "classify.data[0]: data/**"),
                ("src/train.py", "M", "training_code", "classify.training_code[0]: src/**"),
            ]
        ),
        specs=[
            StageSpec(XSS_STAGE, "succeeded", 0.4, XSS_LOG),
            StageSpec("retrain", "running"),
            StageSpec("evaluate", "queued"),
        ],
    )
    # the running stage's message was published again (a lost one): Flower knows it by this id
    next(st for st in hostile.stages if st.name == "retrain").task_id = RETRAIN_TASK
    add_run(
        12,
        repository=other,
        kinds=["app_code"],
        reason="changes: app_code",
        status="queued",
        classification=None,
        specs=[StageSpec("unit_tests", "queued"), StageSpec("deploy", "queued")],
    )

    with db.session() as s:
        s.add_all(runs)
        s.flush()
        by_version = {1: r1, 2: r2, 3: r3, 4: r5, 5: r6}
        for v, run in by_version.items():
            acc = accuracies[v - 1]
            s.add(
                ModelVersion(
                    name="iris-classifier",
                    version=v,
                    run_id=run.id,
                    repository=repo,
                    commit=run.commit,
                    ref=run.ref,
                    data_version={
                        "data/raw": sha(f"data{min(v, 3)}", 32),
                        "data/prepared.csv": sha(f"prep{v}", 32),
                        "_stages": ["prepare", "train"],
                    },
                    params={"n_estimators": 100 + 50 * v},
                    sha256=sha(f"artifact{v}", 64),
                    metrics={"accuracy": acc, "f1_macro": round(acc - 0.012, 4), "loss": round(1 - acc, 4)},
                    artifact_path=f"/srv/loopline/artifacts/iris-classifier/{v}/model.pkl",
                    created_at=run.created_at + timedelta(minutes=1),
                )
            )
        s.add(
            ModelVersion(
                name="fraud-detector",
                version=1,
                run_id=r4.id,
                repository=other,
                commit=r4.commit,
                ref=r4.ref,
                data_version={},
                params={},
                metrics={"auc": 0.88},
                sha256=sha("fraud", 64),
                artifact_path="/srv/x.pkl",
            )
        )
        v3 = Deployment(
            model_name="iris-classifier",
            version=3,
            run_id=r3.id,
            target="local",
            url=release_url,
            status="standby",
            created_at=r3.created_at + timedelta(minutes=2),
        )
        trial = Deployment(
            model_name="iris-classifier",
            version=5,
            run_id=r6.id,
            target="local",
            url=release_url,
            status="retired",
            created_at=r6.created_at + timedelta(minutes=2),
        )
        v5 = Deployment(
            model_name="iris-classifier",
            version=5,
            run_id=app_run.id,
            target="local",
            url=release_url,
            status="active",
            traffic_percent=100,
            created_at=app_run.created_at + timedelta(minutes=2),
        )
        s.add_all([v3, trial, v5])
        s.flush()
        deploy = next(st for st in r6.stages if st.name == "deploy")
        deploy.detail = {**(deploy.detail or {}), **canary_trial(trial.id)}
        next(st for st in app_run.stages if st.name == "deploy").detail = {
            "model": "iris-classifier",
            "version": 5,
            "url": release_url,
            "release": v5.id,
        }
        for run, mv_version in ((r1, 1), (r2, 2), (r3, 3), (r5, 4), (r6, 5)):
            evaluate = next(st for st in run.stages if st.name == "evaluate")
            mv = s.scalars(
                select(ModelVersion).where(
                    ModelVersion.name == "iris-classifier", ModelVersion.version == mv_version
                )
            ).one()
            mv.gate, mv.commit_message = evaluate.detail, f"Tune the forest (v{mv_version})"
        for alias, version, actor, reason in (
            ("production", 1, "run:1", "deployed"),
            ("production", 2, "run:2", "deployed"),
            ("production", 3, "run:3", "deployed"),
            ("candidate", 4, "run:5", "registered"),
            ("candidate", 5, "run:6", "registered"),
            ("staging", 5, "run:6", "canary started"),
            ("production", 5, "canary:auto", "error rate 0.0% (0/64 requests) ≤ 5.0%"),
        ):
            aliases.move(s, "iris-classifier", alias, version, actor=actor, reason=reason)
        ids_of = {"v3": v3.id, "v5": v5.id, "trial": trial.id}
        s.add(
            Delivery(
                id=sha("delivery6", 32),
                provider="github",
                delivery_id="8f14e45f-ceea-467f",
                body_sha256=sha("b"),
                repository=repo,
                status="processed",
                run_id=r6.id,
                received_at=r6.created_at,
                event={
                    "type": "push",
                    "ref": "refs/heads/main",
                    "before": r6.before,
                    "after": r6.commit,
                    "message": "Tune the forest: 350 trees\n\nDeeper trees overfit.",
                    "objects": [],
                },
            )
        )
        s.add(
            Delivery(
                id=sha("delivery3", 32),
                provider="s3",
                delivery_id="s3-evt-0042",
                body_sha256=sha("c"),
                repository=repo,
                status="processed",
                run_id=r3.id,
                received_at=r3.created_at,
                event={
                    "type": "data",
                    "ref": "refs/heads/main",
                    "objects": [
                        {
                            "store": "s3",
                            "bucket": "datasets",
                            "key": "iris/iris-2024-06.csv",
                            "size": 4551,
                            "etag": "abc",
                            "version": "3",
                        }
                    ],
                },
            )
        )
        ids = {
            **ids_of,
            "app_run": app_run.id,
            "hostile": hostile.id,
            "gate_failed": r4.id,
            "waiting": waiting.id,
            "deployed": r6.id,
            "data": r3.id,
            "docs_only": docs_only.id,
            "all": [r.id for r in runs],
        }
    serve_traffic(db, ids_of["v5"], ids_of["v3"], now)
    # The data ledger: the dropped batch that retrained v3 landed as dataset version 1.
    batch = {"path": "iris-2024-06.csv", "sha256": sha("iris-2024-06"), "size": 4506, "rows": 150}
    datasets.land(db, repo, [batch], [], trigger={"kind": "data"}, run_id=ids["data"])
    for role, name in USERS.items():
        ids[role] = users.add(db, name, role)
    return ids


def canary_trial(release: int) -> dict[str, Any]:
    """What the deploy stage records of a healthy 10-second canary trial (``steps/targets/local.py``)."""
    series = []
    for t in range(11):
        canary, stable = 6 * t, 54 * t
        series.append(
            {
                "t": float(t),
                "canary": {"requests": canary, "errors": 0, "error_rate": 0.0, "p99_ms": 9.5 + t % 3},
                "stable": {
                    "requests": stable,
                    "errors": 1 if t >= 4 else 0,
                    "error_rate": round(1 / stable, 4) if t >= 4 else 0.0,
                    "p99_ms": 8.0 + t % 2,
                },
            }
        )
    return {
        "release": release,
        "verdict": "promote",
        "reason": "error rate 0.0% (0/60 requests) ≤ 5.0%, p99 11 ms ≤ 500 ms in 10s",
        "limits": {"max_error_rate": 0.05, "max_p99_ms": 500.0},
        "series": series,
    }


def serve_traffic(db: Database, active: int, standby: int, now: datetime) -> None:
    """An hour of gateway telemetry: two applications calling the active release, one the old one."""
    for minute in range(58, 0, -2):  # inside the dashboard's default hour
        at = (now - timedelta(minutes=minute)).timestamp()
        busy = 40 + (60 - minute)
        bucket = telemetry.BUCKET_KEYS[3 if minute % 10 else 5]
        deltas = {
            (active, "requests", ""): busy,
            (active, "errors", ""): 1 if minute % 14 == 0 else 0,
            (active, "latency", bucket): busy,
            (active, "latency_sum_us", ""): busy * 8000,
            (active, "app", "checkout-web"): busy - 10,
            (active, "app", "fraud-batch"): 10,
            (active, "predictions", "setosa"): busy,
        }
        if minute > 40:
            deltas |= {
                (standby, "requests", ""): 5,
                (standby, "latency", telemetry.BUCKET_KEYS[4]): 5,
                (standby, "app", "legacy-cron"): 5,
            }
        telemetry.add(db, {k: v for k, v in deltas.items() if v}, now=at)


def write_live_log(home: Path, run_id: int, stage: str, text: str) -> None:
    """A running stage's log lives in a file until the stage ends (see service/api.py)."""
    path = home / "logs" / str(run_id) / f"{stage}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@contextmanager
def serve(
    home: Path,
    *,
    seeded: bool = True,
    wrap: Callable[[Any], Any] | None = None,
    api_token: str | None = None,
    settings: Settings | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The real app on 127.0.0.1:<free port> in a thread; yields (base URL, seeded ids).

    ``wrap`` may put WSGI middleware around the app (e.g. to change data between two requests).
    The seeded releases point at a socket that accepts connections, so that a rollback to the
    standby finds it "running" (the web process only checks that it listens).
    """
    from service import create_app

    settings = settings or settings_for(home, api_token)
    app = create_app({"settings": settings, "TESTING": True})
    db: Database = app.extensions["loopline"].db
    ids: dict[str, Any] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    if seeded:
        ids = seed(db, f"http://127.0.0.1:{listener.getsockname()[1]}/predict")
        write_live_log(home, ids["hostile"], "retrain", LIVE_LOG)
    server = make_server("127.0.0.1", 0, wrap(app) if wrap else app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", ids
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        listener.close()
        app.extensions["gateway"].close()
        db.dispose()


CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
)
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromedriver() -> str | None:
    return shutil.which("chromedriver") or (CHROMEDRIVER if Path(CHROMEDRIVER).exists() else None)


def screenshots_dir() -> Path:
    """Where the browser tests save their screenshots: ``LOOPLINE_SCREENSHOTS`` or tests/artifacts."""
    target = Path(os.environ.get("LOOPLINE_SCREENSHOTS") or Path(__file__).parent / "artifacts")
    target.mkdir(parents=True, exist_ok=True)
    return target


class Browser:
    """Headless Chromium driven by Selenium through Debian's chromedriver (no downloads)."""

    def __init__(self, width: int = 1440, height: int = 1000) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        binary, driver = chromium_binary(), chromedriver()
        assert binary and driver, "chromium and chromium-driver are not installed"
        options = Options()
        options.binary_location = binary
        for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(driver))
        self.driver.set_page_load_timeout(30)

    def close(self) -> None:
        self.driver.quit()

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait_js("document.getElementById('conn').textContent.startsWith('Live')")

    def wait_js(self, expression: str, timeout: float = 20) -> Any:
        """Wait until ``expression`` (JavaScript) is truthy in the page; returns its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda d: d.execute_script(f"return {expression}"), f"never true: {expression}"
        )

    def find(self, css: str, timeout: float = 20) -> Any:
        """The first element matching ``css`` once it is displayed."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)), f"never shown: {css}"
        )

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def console_errors(self) -> list[str]:
        """What the page logged at error level (each call returns what came since the last)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        """A PNG of the page (its whole height by default) in :func:`screenshots_dir`."""
        path = screenshots_dir() / f"{name}.png"
        size = self.driver.get_window_size()
        if full_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(int(height) + 40, 8000))
            time.sleep(0.3)  # let the charts follow the new size
        self.driver.save_screenshot(str(path))
        if full_page:
            self.driver.set_window_size(size["width"], size["height"])
        return path


if __name__ == "__main__":  # manual preview: python tests/dashboard_fixtures.py HOME
    home_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/loopline-dash")
    shutil.rmtree(home_dir, ignore_errors=True)
    with serve(home_dir) as (base, seeded_ids):
        print(base, seeded_ids, flush=True)
        while True:
            time.sleep(3600)
