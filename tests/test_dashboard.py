"""The dashboard (``GET /``) in a real headless Chromium, against the real app and a seeded store.

Each check loads the page with ``--dump-dom`` after a virtual-time budget, so the assertions see the
DOM the page's JavaScript built from the JSON API (the HTML template alone contains no data).
"""

from __future__ import annotations

import html
import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dashboard_fixtures import (
    APPROVAL_NAMES,
    DEPLOY_URL,
    LIVE_LOG,
    XSS_BRANCH,
    XSS_LOG,
    XSS_PATH,
    XSS_REASON,
    XSS_STAGE,
    DevTools,
    chromium,
    chromium_binary,
    devtools,
    serve,
)

NO_CHROMIUM = (
    "chromium is not installed: the dashboard browser tests were SKIPPED. "
    "Install the Debian packages with `apt-get install -y chromium chromium-driver`."
)


@pytest.fixture(scope="module")
def browser() -> None:
    if chromium_binary() is None:
        pytest.skip(NO_CHROMIUM)


class Page:
    """A live server plus a way to render one of its URLs in Chromium."""

    def __init__(self, base: str, ids: dict[str, Any], profiles: Path) -> None:
        self.base, self.ids, self._profiles, self._n = base, ids, profiles, itertools.count()

    def dom(self, fragment: str = "", budget_ms: int = 5000) -> str:
        profile = self._profiles / f"profile-{next(self._n)}"
        try:
            return chromium(f"{self.base}/{fragment}", profile, "--dump-dom", budget_ms=budget_ms)
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def screenshot(self, fragment: str, path: Path, size: str = "1440,2400") -> None:
        profile = self._profiles / f"profile-{next(self._n)}"
        try:
            chromium(f"{self.base}/{fragment}", profile, f"--screenshot={path}", f"--window-size={size}")
        finally:
            shutil.rmtree(profile, ignore_errors=True)


class LogGrows:
    """WSGI middleware: after the first read of the running stage's log, the worker "writes" more.

    The extra line can only reach the DOM if the page fetched the log again, i.e. auto-refreshed it.
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
def seeded(browser: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    root = tmp_path_factory.mktemp("dashboard")
    home = root / "home"
    with serve(home, wrap=lambda app: LogGrows(app, home)) as (base, ids):
        yield Page(base, ids, root)


class Elements(HTMLParser):
    """Every element of a serialized DOM: (tag, attributes)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def tags(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]


def text(value: str) -> str:
    """How a text node holding ``value`` is serialized by --dump-dom."""
    return html.escape(value, quote=False)


def assert_no_injection(dom: str) -> None:
    """Hostile strings stayed text: no element, no handler, nothing executed."""
    els = Elements(dom)
    assert "data-pwned" not in dom, "a seeded payload executed"
    assert not els.tags("img") and not els.tags("b") and not els.tags("i")
    assert [a.get("type") for a in els.tags("script")] == ["module"], "only the dashboard's own script"
    for tag, attrs in els.elements:
        assert not any(name.startswith("on") for name in attrs), f"event-handler attribute on <{tag}>"
    assert all(a.get("class") in ("logo", "chart") for a in els.tags("svg"))


def test_runs_models_and_lineage_render(seeded: Page) -> None:
    dom = seeded.dom()
    assert "Live · updated" in dom, "the page never completed a poll of the API"
    for run_id in seeded.ids["all"]:
        assert f'aria-label="Run {run_id}"' in dom
    assert ">iris-demo<" in dom and ">fraud-detector<" in dom
    assert ">experiment/wider-trees<" in dom, "branch shown without refs/heads/"
    assert text(XSS_BRANCH.removeprefix("refs/heads/")) in dom
    for status in (
        "queued",
        "running",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
        "awaiting_approval",
        "gate_failed",
    ):
        assert f'class="badge status-{status}"' in dom, status
    assert ">awaiting approval<" in dom and ">gate failed<" in dom
    assert "12 shown" in dom

    # Models: the deployed model is chosen by default; versions, production marker, chart.
    chosen = r'class="model-tab" aria-pressed="true"[^>]*><span class="model-name">iris-classifier<'
    assert re.search(chosen, dom)
    for v in range(1, 6):
        assert f'<th scope="row">v{v}' in dom
    assert '<tr class="production"><th scope="row">v5<span class="badge prod-badge">production</span>' in dom
    els = Elements(dom)
    chart = [a for a in els.tags("g") if (a.get("class") or "").startswith("point")]
    assert len(chart) == 5 and [a["class"] for a in chart].count("point production") == 1
    assert '<option value="accuracy">accuracy</option>' in dom

    # Serving now: delivery → commit → data → run → model version → deployment URL.
    assert "8f14e45f-ceea-467f" in dom
    assert ">data/prepared.csv<" in dom and "DVC stages: prepare, train" in dom
    assert f'href="#run={seeded.ids["deployed"]}"' in dom
    assert "iris-classifier v5" in dom
    assert f'<a href="{DEPLOY_URL}" rel="noopener noreferrer" target="_blank">{DEPLOY_URL}</a>' in dom
    assert_no_injection(dom)


def test_run_detail_escapes_hostile_data(seeded: Page) -> None:
    run_id = seeded.ids["hostile"]
    dom = seeded.dom(f"#run={run_id}&stage={quote(XSS_STAGE, safe='')}")
    assert f">Run #{run_id}<" in dom
    assert text(XSS_REASON) in dom
    assert f'<span class="stage-name">{text(XSS_STAGE)}</span>' in dom
    assert f"<code>{text(XSS_STAGE)}</code>" in dom, "the chosen stage's panel"
    assert text(XSS_LOG) in dom, "the stage log, as text"
    assert text(XSS_PATH) in dom, "the classification table"
    assert_no_injection(dom)


def test_running_stage_log_refreshes(seeded: Page) -> None:
    dom = seeded.dom(f"#run={seeded.ids['hostile']}", budget_ms=7000)
    # No stage chosen: the running one is shown, and its log keeps being re-read while it runs.
    assert '<li class="stage status-running selected">' in dom
    assert "live — refreshing every 2 s" in dom
    assert text(LIVE_LOG + LogGrows.LINE) in dom


def test_evaluate_stage_shows_gate_verdict_and_numbers(seeded: Page) -> None:
    dom = seeded.dom(f"#run={seeded.ids['gate_failed']}&stage=evaluate")
    assert '<li class="stage status-gate_failed selected"><button type="button" aria-pressed="true"' in dom
    assert "✗ Gate failed" in dom
    verdict = (
        "accuracy 0.9030 vs production v3 on the same data 0.9510 (Δ -0.0480) drops more than the allowed"
    )
    assert text(verdict) in dom
    assert (
        '<td>max_drop_vs_production</td><td><code>accuracy</code></td><td class="num">0.903</td>'
        '<td class="num">0.951</td><td class="num">-0.048</td>'
    ) in dom
    assert "Production version</dt><dd>v3</dd>" in dom
    assert "Production scored</dt><dd>on this run's held-out data</dd>" in dom
    assert '<pre id="stage-log"' in dom and "gate: failed: accuracy 0.9030 vs" in dom
    assert ">src/train.py<" in dom and ">training_code<" in dom, "classification table"


def test_run_view_explains_every_file(seeded: Page) -> None:
    dom = seeded.dom(f"#run={seeded.ids['gate_failed']}")
    # Per file: the path, git's status, the kind and the rule that decided it (as the API has it).
    assert (
        '<tr><td><code class="path">src/train.py</code></td><td>M</td>'
        '<td><span class="chip">training_code</span></td>'
        "<td><code>classify.training_code[0]: src/**</code></td></tr>"
    ) in dom
    assert "<td><code>dvc.yaml: stages.train.params: params.yaml</code></td>" in dom
    assert "3 changed files: 2 training_code, 1 ignore" in dom
    # A huge push lists the first 500 files and says where the rest are.
    run_id = seeded.ids["docs_only"]
    dom = seeded.dom(f"#run={run_id}")
    assert dom.count('<code class="path">docs/page-') == 500 and "docs/page-0499.md" in dom
    assert f"… and 120 more: every file is in <code>GET /api/runs/{run_id}</code>" in dom
    assert "620 changed files: 620 ignore" in dom and "nothing to build: only ignored files changed" in dom


def test_filters_query_the_api(seeded: Page) -> None:
    dom = seeded.dom("#repo=fraud-detector&status=failed")
    assert 'aria-label="Run 7"' in dom
    assert dom.count('aria-label="Run ') == 1
    assert '<option value="failed">failed</option>' in dom and "1 shown" in dom
    dom = seeded.dom("#status=cancelled&repo=nope")
    assert "No runs match these filters." in dom


def test_screenshot(seeded: Page, tmp_path: Path) -> None:
    png = tmp_path / "dashboard.png"
    seeded.screenshot(f"#run={seeded.ids['gate_failed']}&stage=evaluate", png)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    if target := os.environ.get("LOOPLINE_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(png, target)


def test_empty_store_and_api_errors(browser: None, tmp_path: Path) -> None:
    with serve(tmp_path / "home", seeded=False) as (base, ids):
        page = Page(base, ids, tmp_path)
        dom = page.dom()
        assert "No runs yet." in dom and "No models registered yet." in dom
        assert "Live · updated" in dom
        dom = page.dom("#run=999")
        # The API's JSON error {"error": "not_found", "message": "no run 999"} is shown, not a crash.
        assert 'role="alert"' in dom and "<code>not_found</code>" in dom and "no run 999" in dom
        assert "No runs yet." in dom


def test_waiting_run_shows_what_the_approval_names(seeded: Page) -> None:
    dom = seeded.dom(f"#run={seeded.ids['waiting']}")
    assert '<section id="approval" class="approval" aria-labelledby="approval-title">' in dom
    assert ">Approval needed<" in dom and "fraud-detector v2" in dom
    assert f'<code title="{APPROVAL_NAMES["commit"]}">{APPROVAL_NAMES["commit"][:7]}' in dom
    assert 'id="approve-btn"' in dom and 'id="reject-btn"' in dom and 'id="approval-comment"' in dom
    other = seeded.dom(f"#run={seeded.ids['deployed']}")
    assert 'id="approval" class="approval" aria-labelledby="approval-title" hidden' in other


def test_approve_and_reject_buttons_act_with_the_token(browser: None, tmp_path: Path) -> None:
    """Click Approve: the page asks for the token once (kept in sessionStorage), sends the comment
    and exactly the commit and version it showed; then Reject on a second waiting run."""
    import requests

    from store.db import Database
    from store.models import Run, Stage

    with serve(tmp_path / "home", api_token="s3cret") as (base, ids):
        run_id = ids["waiting"]
        db = Database(f"sqlite:///{tmp_path / 'home' / 'loopline.db'}")
        with db.session() as s:  # a second waiting run, for Reject
            src = s.get(Run, run_id)
            other = Run(
                **{c: getattr(src, c) for c in ("repository", "ref", "commit", "trigger", "kinds", "plan")}
            )
            other.status, other.dedupe_key = "awaiting_approval", "second-waiting"
            other.stages = [
                Stage(name=st.name, position=st.position, status=st.status, detail=st.detail)
                for st in src.stages
            ]
            s.add(other)
            s.flush()
            second = other.id
        db.dispose()

        async def approve(tab: DevTools) -> Any:
            await tab.wait_for("!!document.getElementById('approve-btn')")
            await tab.evaluate("document.getElementById('approval-comment').value = 'canary looked fine'")
            await tab.evaluate("setTimeout(() => document.getElementById('approve-btn').click(), 0)")
            await tab.wait_for("document.getElementById('approval-title')?.textContent === 'Approval'")
            await tab.evaluate(f"location.hash = '#run={second}'")
            await tab.wait_for(f"document.getElementById('run-title').textContent === 'Run #{second}'")
            await tab.wait_for("!!document.getElementById('reject-btn')")
            await tab.evaluate("setTimeout(() => document.getElementById('reject-btn').click(), 0)")
            await tab.wait_for(
                "document.querySelector('#approval q') === null && "
                "document.getElementById('approval-title')?.textContent === 'Approval'"
            )
            return await tab.evaluate("sessionStorage.getItem('loopline.apiToken')")

        page = f"{base}/#run={run_id}"
        tab_token = devtools(page, tmp_path / "profile", approve, prompt_answer="s3cret")
        assert tab_token == "s3cret"  # asked once, kept for the tab
        approved = requests.get(f"{base}/api/runs/{run_id}", timeout=5).json()
        assert approved["status"] == "queued" and approved["approval"]["decision"] == "approved"
        assert (
            approved["approval"]["comment"] == "canary looked fine"
            and approved["approval"]["by"] == "dashboard"
        )
        assert approved["approval"]["model_version"] == APPROVAL_NAMES["model_version"]
        rejected = requests.get(f"{base}/api/runs/{second}", timeout=5).json()
        assert rejected["status"] == "failed" and rejected["reason"] == "rejected by dashboard"

        async def refused(tab: DevTools) -> Any:
            await tab.wait_for("!!document.getElementById('approve-btn')")
            await tab.evaluate("setTimeout(() => document.getElementById('approve-btn').click(), 0)")
            status = "document.getElementById('approval-status').textContent"
            message = await tab.wait_for(f"{status}.includes('failed') && {status}")
            return message, await tab.evaluate("sessionStorage.getItem('loopline.apiToken')")

        # A wrong token: the server refuses, the page says so and forgets the token.
        with db.session() as s:
            s.get(Run, second).status = "awaiting_approval"
            next(st for st in s.get(Run, second).stages if st.name == "approval").status = "awaiting_approval"
        db.dispose()
        message, kept = devtools(
            f"{base}/#run={second}", tmp_path / "profile2", refused, prompt_answer="wrong"
        )
        assert "approve failed: bad_token" in message and kept is None
        assert requests.get(f"{base}/api/runs/{second}", timeout=5).json()["status"] == "awaiting_approval"
