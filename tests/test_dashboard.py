"""The dashboard (``GET /``) in real headless Chromium, driven by Selenium through Debian's
chromedriver, against the real app and a seeded store (and, in ``test_dashboard_trial.py``'s
place below, a real canary trial). Each test clicks as a person would, checks the page logged no
errors, and saves a screenshot under :func:`screenshots_dir` (printed at the end of the run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dashboard_fixtures import (
    FLOWER_URL,
    LIVE_LOG,
    RETRAIN_TASK,
    USERS,
    XSS_BRANCH,
    XSS_LOG,
    XSS_PATH,
    XSS_REASON,
    XSS_STAGE,
    Browser,
    chromedriver,
    chromium_binary,
    serve,
    sha,
)

from service.gateway import ROUTE_TTL
from store.db import Database
from store.models import Stage, utcnow
from tests.conftest import Project
from tests.release_helpers import ROWS
from tests.test_releases import CANARY, Deploys, set_deploy
from workers import releases as processes
from workers.steps import StepContext, StepResult

NO_CHROMIUM = (
    "chromium or chromium-driver is not installed: the dashboard browser tests were SKIPPED. "
    "Install the Debian packages with `apt-get install -y chromium chromium-driver`."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_binary() is None or chromedriver() is None:
        pytest.skip(NO_CHROMIUM)
    b = Browser()
    yield b
    b.close()


@pytest.fixture(autouse=True)
def no_console_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every page the test opened logged nothing at error level."""
    yield
    if "browser" in request.fixturenames:
        b: Browser = request.getfixturevalue("browser")
        errors = b.console_errors()
        b.driver.get("about:blank")  # no page of this test keeps polling into the next one
        assert errors == []


def expect_refused(b: Browser, path: str, status: int) -> None:
    """The only errors logged so far are the refusals the test provoked (Chromium logs every
    4xx answer to a fetch as a console error)."""
    errors = b.console_errors()
    refused = f"{path} - Failed to load resource: the server responded with a status of {status}"
    assert errors and all(refused in e for e in errors), errors


class LogGrows:
    """WSGI middleware: after the first read of the running stage's log, the worker "writes" more.

    The extra line can only reach the page if it fetched the log again, i.e. followed it.
    """

    LINE = "epoch 5/10 loss=0.171 (appended after the first read)\n"

    def __init__(self, app: Callable[..., Any], home: Path) -> None:
        self.app, self.home, self.reads = app, home, 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.endswith("/stages/retrain/log") and "/runs/" in path:
            self.reads += 1
            if self.reads == 2:
                run_id = path.split("/runs/")[1].split("/")[0]
                with (self.home / "logs" / run_id / "retrain.log").open("a") as fh:
                    fh.write(self.LINE)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def seeded(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A read-only seeded server shared by the tests that only look."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    with serve(home, wrap=lambda app: LogGrows(app, home)) as live:
        yield live
        browser.driver.get("about:blank")  # stop polling before the server goes


@pytest.fixture
def fresh(browser: Browser, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A seeded server of its own, for tests that act (approve, roll back)."""
    with serve(tmp_path / "home", api_token="boot") as live:
        yield live
        browser.driver.get("about:blank")


def sign_in(b: Browser, token: str) -> None:
    """Open the sign-in form from the top bar and submit the token with the keyboard."""
    from selenium.webdriver.common.keys import Keys

    if b.driver.execute_script("return !!document.getElementById('signout-btn')"):
        b.find("#signout-btn").click()
    b.find("#signin-btn").send_keys(Keys.ENTER)
    field = b.find("#signin-token")
    field.send_keys(token)
    field.send_keys(Keys.ENTER)


def no_injection(b: Browser) -> None:
    """Hostile strings stayed text: no element made from them, nothing executed."""
    assert b.driver.execute_script(
        "return document.body.dataset.pwned === undefined && "
        "document.querySelectorAll('main img, main b, main i, main script').length === 0"
    )


def test_one_pane_answers_what_serves_from_what_and_how_it_does(
    browser: Browser, seeded: tuple[str, dict[str, Any]]
) -> None:
    base, ids = seeded
    browser.open(f"{base}/#model=iris-classifier")
    b = browser
    b.find("#timeline .tl-row")

    # Needs attention: the waiting approval and the recent failures, each a link to its run.
    attention = b.text("#attention")
    assert f"Run #{ids['waiting']}" in attention and "fraud-detector v2" in attention
    assert "unit_tests: FAILED tests/test_api.py::test_predict - KeyError" in attention
    assert f"Run #{ids['gate_failed']}" in attention and "evaluate: failed: accuracy 0.9030" in attention

    # Serving now: v5, released by the app-code run (its commit, not the training commit).
    summary = b.text("#serving-summary")
    assert "v5" in summary and sha("commit13")[:8] in summary
    assert f"app release · model trained at {sha('commit6')[:8]}" in summary
    assert "ann" in summary and "v5 100%" in summary
    commit_node = b.text("#serving .n-commit")
    assert sha("commit13")[:8] in commit_node and "app release; model trained at" in commit_node

    # Traffic over time per release, and which applications call which version.
    for chart in ("#chart-rate", "#chart-latency", "#chart-errors"):
        assert b.find(f"{chart} canvas")
    consumers = b.text("#consumers-table")
    assert "checkout-web" in consumers and "fraud-batch" in consumers and "legacy-cron" in consumers
    rows = b.driver.execute_script(
        "return [...document.querySelectorAll('#consumers-table tbody tr')]"
        ".map(tr => [...tr.children].map(td => td.textContent))"
    )
    assert rows[0] == ["checkout-web", "1740", "0", "1740", "0"]
    assert ["legacy-cron", "0", "45", "45", "0"] in rows

    # Aliases and their history, with who moved them.
    assert "production → v5" in b.text("#aliases")
    assert "canary:auto" in b.text("#alias-history")

    # The timeline: v5's trigger, diff from v4, gate against production, approval, trial.
    v5 = b.text("#version-5")
    assert "Tune the forest: 350 trees" in v5 and "VS V4" in v5.upper()
    assert "n_estimators 300 → 350" in v5
    assert "approved by ann" in v5 and "app change only, same model" in v5
    assert "Canary promoted. error rate 0.0% (0/60 requests) ≤ 5.0%" in v5
    trial = ids["trial"]
    assert b.find(f"#trial-errors-{trial} canvas") and b.find(f"#trial-p99-{trial} canvas")
    legend = b.text(f"#trial-errors-{trial}")
    assert "canary v5" in legend and "stable" in legend and "max error rate" in legend
    assert "branch experiment/wider-trees · not deployable" in b.text("#version-4")
    assert "standby" in b.text("#version-3") and "iris/iris-2024-06.csv (4.4 kB)" in b.text("#version-3")
    assert "gate minimum" in b.text("#chart-metric")

    # Data: the batch that retrained v3, its drift per feature as a chart against the limit.
    assert b.find("#chart-drift canvas")
    assert "iris-2024-06.csv (run #3)" in b.text("#data .chart-title")
    assert "drift limit" in b.text("#chart-drift")
    batches = b.text("#data-batches")
    assert "iris-2024-06.csv" in batches and "petal_length" in batches and "150" in batches
    # ... and the data ledger's versions, with their size and what changed.
    versions = b.text("#data-versions")
    assert "v1" in versions and "4.4 KB" in versions and "data: +1 file" in versions

    # Signed out: nothing to click that would act.
    assert not b.driver.find_elements("css selector", "[data-action]")
    b.screenshot("overview")

    # Keyboard and a phone's width: nothing overflows sideways.
    b.driver.set_window_size(390, 844)
    b.wait_js("document.documentElement.scrollWidth <= window.innerWidth + 1")
    b.screenshot("overview-mobile", full_page=False)
    b.driver.set_window_size(1440, 1000)


def test_runs_list_scans_and_filters(browser: Browser, seeded: tuple[str, dict[str, Any]]) -> None:
    from selenium.webdriver.support.ui import Select

    base, ids = seeded
    b = browser
    b.open(f"{base}/")
    assert b.wait_js("document.getElementById('runs-count').textContent") == "13 shown"
    row = b.text(f"#runs-body tr[data-key='{ids['deployed']}']")
    assert "Tune the forest: 350 trees" in row
    app_row = b.text(f"#runs-body tr[data-key='{ids['app_run']}']")
    assert "Serve: answer 422 for rows of the wrong width" in app_row and "Grace Hopper" in app_row
    failed = b.text("#runs-body tr[data-key='8']")
    assert "unit_tests: FAILED tests/test_api.py::test_predict" in failed

    def shown() -> list[int]:
        b.wait_js("document.getElementById('runs-count').textContent !== ''")
        return [
            int(k)
            for k in b.driver.execute_script(
                "return [...document.querySelectorAll('#runs-body tr')].map(tr => tr.dataset.key)"
            )
        ]

    Select(b.find("#filter-status")).select_by_value("failed")
    b.wait_js("location.hash.includes('status=failed')")
    Select(b.find("#filter-repo")).select_by_value("fraud-detector")
    b.wait_js("document.getElementById('runs-count').textContent === '1 shown'")
    assert shown() == [8]
    b.screenshot("runs-filtered")

    b.open(f"{base}/")
    branch = b.find("#filter-branch")
    branch.send_keys("experiment/wider-trees\n")
    b.wait_js("document.getElementById('runs-count').textContent === '1 shown'")
    assert shown() == [5]
    b.open(f"{base}/#trigger=data")
    b.wait_js("document.getElementById('runs-count').textContent === '1 shown'")
    assert shown() == [ids["data"]]
    b.open(f"{base}/#status=cancelled&repo=nope")
    assert "No runs match these filters." in b.text("#runs-empty")
    no_injection(b)


def test_run_detail_escapes_hostile_data_and_follows_the_live_log(
    browser: Browser, seeded: tuple[str, dict[str, Any]]
) -> None:
    base, ids = seeded
    b = browser
    b.open(f"{base}/#run={ids['hostile']}")
    assert b.text("#run-title") == f"Run #{ids['hostile']}"
    assert XSS_REASON in b.text("#run-reason")
    assert XSS_BRANCH.removeprefix("refs/heads/") in b.text(f"#runs-body tr[data-key='{ids['hostile']}']")
    # No stage chosen: the running one is shown, and its log follows what the worker writes.
    assert "live" in b.text("#log-state")
    b.wait_js(f"document.getElementById('stage-log').textContent.includes({LogGrows.LINE.strip()!r})")
    assert b.text("#stage-log").startswith(LIVE_LOG.splitlines()[0])
    assert XSS_PATH in b.text("#classification")
    flower = b.find("#flower-link").get_attribute("href")
    assert flower == f"{FLOWER_URL}/task/{RETRAIN_TASK}"
    b.find(".stage:first-child button").click()
    b.wait_js("document.getElementById('stage-log').textContent.includes('stage output')")
    assert XSS_STAGE in b.text("#stage-title") and XSS_LOG in b.text("#stage-log")
    no_injection(b)


def test_evaluate_stage_shows_gate_verdict_and_numbers(
    browser: Browser, seeded: tuple[str, dict[str, Any]]
) -> None:
    base, ids = seeded
    b = browser
    b.open(f"{base}/#run={ids['gate_failed']}&stage=evaluate")
    verdict = b.text("#stage-detail .verdict")
    assert verdict.startswith("✗ Gate failed")
    assert "accuracy 0.9030 vs production v3 on the same data 0.9510 (Δ -0.0480)" in verdict
    checks = b.driver.execute_script(
        "return [...document.querySelectorAll('#stage-detail table.checks tbody tr')]"
        ".map(tr => [...tr.children].map(td => td.textContent))"
    )
    assert ["max_drop_vs_production", "accuracy", "0.903", "0.951", "-0.048", "0.941", "✗ fail"] in checks
    assert "src/train.py" in b.text("#classification")
    b.screenshot("gate-failed")


def test_empty_store_and_api_errors(browser: Browser, tmp_path: Path) -> None:
    with serve(tmp_path / "home", seeded=False) as (base, _):
        browser.open(f"{base}/")
        assert "No runs yet." in browser.text("#runs-empty")
        assert "No models registered yet." in browser.text("#models-empty")
        browser.open(f"{base}/#run=999")
        alert = browser.text("#run-error [role=alert]")
        assert "not_found" in alert and "no run 999" in alert
        expect_refused(browser, "/api/runs/999", 404)
        browser.driver.get("about:blank")


def test_approval_by_a_named_user_and_roles(browser: Browser, fresh: tuple[str, dict[str, Any]]) -> None:
    """Sign in with a personal token (no window.prompt): a viewer cannot approve; an approver
    approves with a comment and the record names them; a wrong token is refused in the form."""
    base, ids = fresh
    b = browser
    run_id = ids["waiting"]
    b.open(f"{base}/#run={run_id}")
    b.find("#signin-to-approve")
    assert not b.driver.find_elements("css selector", "#approve-btn")

    sign_in(b, "llu_not-a-token")
    assert "not valid" in b.text("#signin-error")
    b.find("#signin-cancel").click()
    expect_refused(b, "/api/me", 401)

    sign_in(b, ids["viewer"])
    assert b.text("#who-name") == f"{USERS['viewer']} viewer"
    assert "approving needs the approver role" in b.text("#approval")

    sign_in(b, ids["approver"])
    b.find("#approval-comment").send_keys("metrics look right")
    b.find("#approve-btn").click()
    b.wait_js("document.getElementById('approval-title')?.textContent === 'Approval'")
    assert "approved by ann" in b.text("#approval")
    record = requests.get(f"{base}/api/runs/{run_id}", timeout=5).json()["approval"]
    assert (record["decision"], record["by"], record["comment"]) == ("approved", "ann", "metrics look right")
    assert record["model_version"] == 2
    b.screenshot("approval-by-ann")

    # Cancel a queued run, then retry it: the page opens the new attempt.
    queued = ids["all"][-1]
    b.open(f"{base}/#run={queued}")
    b.wait_js(f"document.getElementById('run-title').textContent === 'Run #{queued}'")
    b.wait_js("!document.getElementById('run-body').hidden")
    b.find("#cancel-btn").click()
    b.wait_js("!!document.getElementById('retry-btn')")
    cancelled = requests.get(f"{base}/api/runs/{queued}", timeout=5).json()
    assert cancelled["status"] == "cancelled" and "ann" in cancelled["reason"]
    b.find("#retry-btn").click()
    b.wait_js(f"!location.hash.includes('run={queued}') && location.hash.includes('run=')")
    again = requests.get(f"{base}/api/runs", timeout=5).json()["runs"][0]
    assert again["retry_of"] == queued
    assert f"retry of #{queued}" in b.text(f"#runs-body tr[data-key='{again['id']}']")
    # Approvers do not move releases: no promote or roll back buttons for them.
    b.open(f"{base}/#model=iris-classifier")
    b.find("#timeline .tl-row")
    assert not b.driver.find_elements("css selector", "[data-action]")
    b.driver.execute_script("sessionStorage.clear()")


def test_rollback_from_the_timeline_records_the_admin(
    browser: Browser, fresh: tuple[str, dict[str, Any]]
) -> None:
    base, ids = fresh
    b = browser
    b.open(f"{base}/#model=iris-classifier")
    sign_in(b, ids["admin"])
    button = b.find("#version-3 [data-action=rollback]")
    assert button.text == "Roll back to v3"
    button.click()
    b.wait_js("document.getElementById('release-actions-status').textContent.includes('rolled back by root')")
    state = requests.get(f"{base}/api/models/iris-classifier", timeout=5).json()
    assert state["aliases"]["production"] == 3
    assert state["history"][0]["actor"] == "user:root"
    b.wait_js("document.querySelector('#version-3 .flag.serving') !== null")
    assert "user:root" not in b.text("#alias-history") and "root" in b.text("#alias-history")
    b.screenshot("rolled-back")
    b.driver.execute_script("sessionStorage.clear()")


@pytest.fixture
def trial_server(browser: Browser, tmp_path: Path, project: Project) -> Iterator[tuple[str, Deploys]]:
    """v1 deployed and v2 through a real canary trial, with traffic from two named applications;
    then the dashboard served on the same store."""
    from tests.conftest import make_settings

    db = Database(f"sqlite:///{tmp_path / 'loopline.db'}")
    db.migrate()
    settings = make_settings(tmp_path, (project.repo_config(),), db_url=db.url, api_token="boot")
    deploys = Deploys(settings, db, project)
    try:
        with serve(settings.home, seeded=False, settings=settings) as (base, _):
            good = set_deploy(project, CANARY)
            assert record(db, deploys.release(good), deploys).status == "succeeded"
            ctx = deploys.release(good)
            done: list[StepResult] = []
            worker = threading.Thread(target=lambda: done.append(record(db, ctx, deploys)))
            worker.start()
            calls = 0
            while worker.is_alive() and calls < 3000:
                app = "checkout-web" if calls % 3 else "fraud-batch"
                requests.post(
                    f"{base}/serve/churn/predict",
                    json={"instances": ROWS},
                    headers={"X-Loopline-App": app},
                    timeout=10,
                )
                calls += 1
                time.sleep(0.02)
            worker.join()
            assert done[0].status == "succeeded" and done[0].detail["verdict"] == "promote", done[0].detail
            yield base, deploys
            browser.driver.get("about:blank")
    finally:
        processes.stop_all(db)
        db.dispose()


def record(db: Database, ctx: StepContext, deploys: Deploys) -> StepResult:
    """Run the real deploy step and keep its result as the runner does (the stage's detail)."""
    started = utcnow()
    result = deploys.run(ctx)
    with db.session() as s:
        s.add(
            Stage(
                run_id=ctx.run_id,
                name="deploy",
                position=0,
                status=result.status,
                started_at=started,
                finished_at=utcnow(),
                detail=result.detail,
            )
        )
    return result


@pytest.mark.e2e
def test_real_canary_trial_charts_and_rollback_from_the_timeline(
    browser: Browser, trial_server: tuple[str, Deploys]
) -> None:
    base, _ = trial_server
    b = browser
    b.open(f"{base}/#model=churn")
    timeline = requests.get(f"{base}/api/models/churn/timeline", timeout=5).json()
    v2 = next(v for v in timeline["versions"] if v["version"] == 2)
    release = v2["releases"][0]
    series = release["trial"]["series"]
    assert len(series) >= 3 and series[-1]["canary"]["requests"] >= 8 and series[-1]["stable"]["requests"] > 0
    assert release["trial"]["limits"] == {"max_error_rate": 0.2, "max_p99_ms": 500.0}

    # The trial as charts, canary against stable with the limits, and its verdict in words.
    assert b.find(f"#trial-errors-{release['id']} canvas") and b.find(f"#trial-p99-{release['id']} canvas")
    words = b.text(f"#version-2 [data-release='{release['id']}'] .verdict")
    assert words.startswith("Canary promoted. error rate 0.0%") and "≤ 20.0%" in words
    legend = b.text(f"#trial-p99-{release['id']}")
    assert "canary v2" in legend and "stable" in legend and "max p99" in legend
    consumers = b.text("#consumers-table")
    assert "checkout-web" in consumers and "fraud-batch" in consumers
    assert b.find("#chart-rate canvas")
    b.find(f"#version-2 #trial-errors-{release['id']}").location_once_scrolled_into_view
    b.screenshot("canary-trial")

    # The admin (bootstrap token) rolls production back to v1 from v1's row: it serves again.
    sign_in(b, "boot")
    b.find("#version-1 [data-action=rollback]").click()
    b.wait_js("document.getElementById('release-actions-status').textContent.includes('rolled back by api')")
    state = requests.get(f"{base}/api/models/churn", timeout=5).json()
    assert state["aliases"]["production"] == 1 and state["history"][0]["actor"] == "user:api"
    time.sleep(ROUTE_TTL + 0.1)
    answer = requests.post(f"{base}/serve/churn/predict", json={"instances": ROWS}, timeout=10)
    assert answer.headers["X-Loopline-Model-Version"] == "1"
    b.wait_js("document.querySelector('#version-1 .flag.serving') !== null")
    b.screenshot("rolled-back-real")
    b.driver.execute_script("sessionStorage.clear()")
