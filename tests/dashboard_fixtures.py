"""Seed data and a live server for the dashboard tests (real Flask app, real store, real port).

Also runnable by hand to look at the dashboard with realistic data::

    python tests/dashboard_fixtures.py /tmp/loopline-dash
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

from config.settings import Settings
from pipelines.gate import judge
from pipelines.project import GateConfig
from store.db import Database
from store.models import Delivery, Deployment, ModelVersion, Run, Stage

#: Hostile strings planted in the seeded data; the page must show them as text.
XSS_REASON = '<img src=x onerror="document.body.dataset.pwned=1">'
XSS_STAGE = "<svg onload=alert(1)>"
XSS_LOG = "<script>document.body.dataset.pwned=2</script> stage output"
XSS_PATH = 'data/<b onclick="x()">batch</b>.csv'
XSS_BRANCH = "refs/heads/feat/<i>x</i>"

DEPLOY_URL = "http://127.0.0.1:9301/predict"
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


def settings_for(home: Path, api_token: str | None = None) -> Settings:
    return Settings(
        home=home,
        config_path=home / "loopline.yaml",
        database_url=f"sqlite:///{home / 'loopline.db'}",
        broker_url=f"redis+socket://{home / 'redis.sock'}",
        api_token=api_token,
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


def seed(db: Database) -> dict[str, Any]:
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
        created = now - timedelta(minutes=[0, 4320, 2880, 1500, 1400, 600, 200, 95, 80, 42, 30, 6, 1][i])
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
                        {"file": "iris-2024-06.csv", "rows": 150, "columns": 5, "problems": [], "drifted": []}
                    ],
                    "reference_files": ["iris.csv"],
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
        s.add(
            Deployment(
                model_name="iris-classifier",
                version=3,
                run_id=r3.id,
                target="local",
                url=DEPLOY_URL,
                status="retired",
                created_at=r3.created_at + timedelta(minutes=2),
            )
        )
        s.add(
            Deployment(
                model_name="iris-classifier",
                version=5,
                run_id=r6.id,
                target="local",
                url=DEPLOY_URL,
                status="active",
                created_at=r6.created_at + timedelta(minutes=2),
            )
        )
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
            "hostile": hostile.id,
            "gate_failed": r4.id,
            "waiting": waiting.id,
            "deployed": r6.id,
            "data": r3.id,
            "docs_only": docs_only.id,
            "all": [r.id for r in runs],
        }
    return ids


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
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The real app on 127.0.0.1:<free port> in a thread; yields (base URL, seeded ids).

    ``wrap`` may put WSGI middleware around the app (e.g. to change data between two requests).
    """
    from service import create_app

    settings = settings_for(home, api_token)
    app = create_app({"settings": settings, "TESTING": True})
    db: Database = app.extensions["loopline"].db
    ids: dict[str, Any] = {}
    if seeded:
        ids = seed(db)
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
        db.dispose()


CHROMIUM_FLAGS = (
    "--headless",
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


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, profile: Path, *extra: str, budget_ms: int = 5000, timeout: float = 90) -> str:
    """Load ``url`` in headless Chromium; the page runs for ``budget_ms`` of virtual time. Returns stdout."""
    binary = chromium_binary()
    assert binary, "chromium is not installed"
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


class DevTools:
    """One headless Chromium tab driven over the DevTools protocol: evaluate script in the page,
    wait for it to be true, and answer ``window.prompt`` dialogs like a person would."""

    def __init__(self, ws: Any, prompt_answer: str | None) -> None:
        self.ws, self.prompt_answer = ws, prompt_answer
        self.prompts: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while (raw := await self.ws.read_message()) is not None:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self._pending:
                self._pending.pop(msg["id"]).set_result(msg)
            elif msg.get("method") == "Page.javascriptDialogOpening":
                self.prompts.append(msg["params"]["message"])
                answer = self.prompt_answer
                self._tasks.add(
                    asyncio.ensure_future(
                        self.call(
                            "Page.handleJavaScriptDialog", accept=answer is not None, promptText=answer or ""
                        )
                    )
                )

    async def closed(self) -> None:
        await self._reader
        for task in self._tasks:
            task.cancel()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self._ids)
        self._pending[n] = asyncio.get_running_loop().create_future()
        await self.ws.write_message(json.dumps({"id": n, "method": method, "params": params}))
        msg = await asyncio.wait_for(self._pending[n], 30)
        if "error" in msg:
            raise AssertionError(f"{method}: {msg['error']}")
        return dict(msg["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true: {expression}")


def devtools(
    url: str, profile: Path, script: Callable[[DevTools], Awaitable[Any]], prompt_answer: str | None = None
) -> Any:
    """Open ``url`` in headless Chromium and run ``script`` against the tab; returns its result."""
    from tornado.websocket import websocket_connect

    from workers.process import terminate

    binary = chromium_binary()
    assert binary, "chromium is not installed"
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not open DevTools"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        target = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")

        async def session() -> Any:
            ws = await websocket_connect(target, max_message_size=64 * 1024 * 1024)
            tab = DevTools(ws, prompt_answer)
            try:
                await tab.call("Page.enable")
                await tab.call("Page.navigate", url=url)
                return await script(tab)
            finally:
                ws.close()
                await asyncio.wait_for(tab.closed(), 10)  # the close handshake, so the socket is closed

        return asyncio.run(session())
    finally:
        terminate(proc)


if __name__ == "__main__":  # manual preview: python tests/dashboard_fixtures.py HOME
    home_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/loopline-dash")
    shutil.rmtree(home_dir, ignore_errors=True)
    with serve(home_dir) as (base, seeded_ids):
        print(base, seeded_ids, flush=True)
        while True:
            time.sleep(3600)
