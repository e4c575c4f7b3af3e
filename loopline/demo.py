"""``loopline demo``: the whole loop on this machine, with nothing installed by hand.

A throw-away bare repository receives the sample project; Loopline (embedded Redis, SQLite)
tests, trains, registers and deploys it; a dropped data file retrains it; a push that cripples
the model is stopped by the gate; a revert waits for an approval given through the API; clients
whose inputs drifted start a retrain by themselves (``triggers.drift``); then a report.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import requests
import yaml

from config.settings import Settings
from loopline.hook import install_hook
from loopline.processes import Stack
from loopline.report import (
    format_approval,
    format_data_version,
    format_run,
    open_store,
    show_model,
    show_releases,
)
from store import users
from store.lifecycle import TERMINAL
from workers import serving

#: The sample project: beside the sources (a checkout, an editable install), else where a
#: plain install puts it (pyproject.toml's data-files).
_SOURCES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE = next(
    (p for p in (_SOURCES, Path(sys.prefix) / "share/loopline/examples") if (p / "loopline.yml").is_file()),
    _SOURCES,
)
_COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__",
    ".pytest_cache",
    "models",
    "prepared",
    "metrics.json",
    "dvc.lock",
    "cache",
    "tmp",
    "config.local",
)
#: Where the demo stops waiting for a run: it ended, or it waits for a human.
SETTLED = TERMINAL | {"awaiting_approval"}


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def prepare_project(example: Path, work: Path, remote: Path) -> None:
    """Copy the sample project into a fresh repository whose remote is a local bare repo."""
    shutil.copytree(example, work, ignore=_COPY_IGNORE)
    remote.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "-b", "main", str(remote), cwd=remote.parent)
    _git("init", "-b", "main", cwd=work)
    _git("config", "user.email", "demo@loopline.invalid", cwd=work)
    _git("config", "user.name", "Loopline demo", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "Churn model: first version", cwd=work)
    _git("remote", "add", "origin", str(remote), cwd=work)


def write_config(path: Path, remote: Path, lake: Path, secret_env: str | None = None) -> Path:
    """A server config registering ``remote`` as repository ``churn`` with ``lake`` as its drop folder."""
    repo: dict[str, Any] = {
        "name": "churn",
        "provider": "git",
        "match": "churn",
        "url": str(remote),
        "branches": ["main"],
        "data_lake": [{"folder": str(lake)}],
    }
    if secret_env:
        repo["secret_env"] = secret_env
    path.write_text(yaml.safe_dump({"repositories": [repo]}))
    return path


def wait_for_run(
    api: str, repo: str, after_id: int, timeout: float = 600, shown: set[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Follow the next run of ``repo`` to its end, printing its plan and each stage as it moves
    (``shown``: stage states already printed, when following a run again after an approval)."""
    deadline = time.monotonic() + timeout
    again = bool(shown)
    shown = set() if shown is None else shown
    if not again:
        click.echo("  waiting for Loopline to pick up the event …")
    run: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        runs = requests.get(f"{api}/api/runs", params={"repo": repo}, timeout=5).json()["runs"]
        newer = [r["id"] for r in runs if r["id"] > after_id]
        if newer:
            if run is None:
                run = requests.get(f"{api}/api/runs/{min(newer)}", timeout=5).json()
                plan = " → ".join(run["plan"]) or "(nothing to do)"
                if not again:
                    click.echo(f"  run #{run['id']}: {', '.join(run['kinds']) or 'no changes'}: {plan}")
            run = requests.get(f"{api}/api/runs/{run['id']}", timeout=5).json()
            for stage in run["stages"]:
                if stage["status"] != "queued" and (stage["name"], stage["status"]) not in shown:
                    shown.add((stage["name"], stage["status"]))
                    took = (
                        f" {stage['duration_seconds']:.1f}s" if stage["duration_seconds"] is not None else ""
                    )
                    click.echo(f"    {stage['status']:<10} {stage['name']}{took}")
            if run["status"] in SETTLED:
                return run
        time.sleep(0.3)
    raise click.ClickException(f"timed out waiting for a run of {repo}" + (f" (#{run['id']})" if run else ""))


def predict(api: str, model: str) -> dict[str, Any]:
    """Ask the deployed model about six real rows (three of each class); print what it says."""
    from sklearn.datasets import load_breast_cancer

    current = requests.get(f"{api}/api/deployments/current", params={"model": model}, timeout=5).json()
    data = load_breast_cancer()
    picks = [i for label in (0, 1) for i in (data.target == label).nonzero()[0][:3]]
    rows = data.data[picks].tolist()
    answer = requests.post(
        f"{current['deployment']['url']}/predict", json={"instances": rows}, timeout=10
    ).json()
    click.echo(
        f"  POST /predict on v{current['deployment']['version']}: predicted {answer['predictions']}, "
        f"true {data.target[picks].tolist()}"
    )
    return current


def run_demo(example: Path | None = None, keep: bool = False, keep_running: bool = False) -> int:
    example = example or EXAMPLE
    if not (example / "loopline.yml").exists():
        raise click.ClickException(f"{example} is not a Loopline sample project (no loopline.yml)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="loopline-demo-"))
    work, remote, lake = root / "churn", root / "remote" / "churn.git", root / "lake"
    lake.mkdir()
    config = write_config(root / "loopline.yaml", remote, lake, "LOOPLINE_HOOK_SECRET")
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPLINE_BROKER_URL", "LOOPLINE_DATABASE_URL")}
    env.update(
        LOOPLINE_HOME=str(root / "home"),
        LOOPLINE_CONFIG=str(config),
        LOOPLINE_HOOK_SECRET=secrets.token_hex(16),
        LOOPLINE_API_TOKEN=secrets.token_hex(16),
    )
    click.echo(f"demo directory: {root}")
    stack = Stack(env, serving.free_port())
    ok = False
    try:
        prepare_project(example, work, remote)
        deploy_through_a_canary(work)
        click.echo("starting Loopline (embedded Redis, SQLite, web, 2 workers, watcher) …")
        stack.start()
        install_hook(remote, f"{stack.url}/hooks/git", "churn")
        click.echo(f"Loopline is up at {stack.url}\n\n1. git push: the sample project's first version")
        push = subprocess.run(
            ["git", "push", "-q", "origin", "main"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        click.echo("  " + (push.stdout + push.stderr).strip().replace("\n", "\n  "))
        first = wait_for_run(stack.url, "churn", 0)
        if first["status"] != "succeeded":
            return _fail(stack, first)
        current = predict(stack.url, "churn")

        click.echo("\n2. a new data file lands in the drop folder")
        batch = lake / "batch-001.csv"
        subprocess.run(
            [sys.executable, "scripts/make_batch.py", "200", str(batch) + ".part"],
            cwd=work,
            check=True,
            capture_output=True,
        )
        with Traffic(stack.url, "churn") as traffic:  # users keep predicting while it retrains
            os.replace(str(batch) + ".part", batch)  # writers use temp names; the watcher ignores *.part
            click.echo(f"  dropped {batch.name}; predictions keep going through /serve/churn/predict")
            second = wait_for_run(stack.url, "churn", first["id"])
        if second["status"] != "succeeded":
            return _fail(stack, second)
        current = predict(stack.url, "churn")
        _print_canary(stack.url, second, traffic)

        third = gate_demo(stack.url, work, env, second["id"], current)
        if third["status"] != "gate_failed":
            return _fail(stack, third)
        with Traffic(stack.url, "churn"):  # the approved release goes through a canary trial too
            fourth = approval_demo(stack.url, work, env, third["id"], env["LOOPLINE_API_TOKEN"])
        if fourth["status"] != "succeeded":
            return _fail(stack, fourth)
        current = predict(stack.url, "churn")
        fifth = drift_demo(stack.url, fourth["id"], current)
        if fifth["status"] != "awaiting_approval":
            return _fail(stack, fifth)

        settings = Settings.from_env(stack.env)
        click.echo("\nRuns")
        for run in (first, second, third, fourth, fifth):
            click.echo(format_run(requests.get(f"{stack.url}/api/runs/{run['id']}", timeout=5).json()))
        click.echo("\nModel versions")
        click.echo(show_model(settings, "churn", as_json=False))
        click.echo("\nAliases and releases")
        db = open_store(settings)
        click.echo(show_releases(db, "churn"))
        token = users.add(db, "demo", "admin")
        db.dispose()
        click.echo("\nServing now: lineage")
        _print_lineage(current)
        click.echo("\nData ledger: what each model learned from")
        _print_ledger(stack.url, first, current)
        ok = True
        click.echo(f"\ndemo finished in {time.monotonic() - started:.1f}s")
        click.echo(f"\ndashboard: {stack.url}/  (sign in as demo, an admin, with the token {token})")
        if keep_running:
            click.echo("serving the dashboard until Ctrl-C …")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return 0
    finally:
        stack.stop()
        if keep or not ok:
            click.echo(f"(kept {root} for inspection)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _print_lineage(current: dict[str, Any]) -> None:
    dep, mv, run = current["deployment"], current["model_version"], current["run"]
    for delivery in current["deliveries"]:
        event = delivery["event"]
        what = (
            f"{event['ref']} {event['after'][:10]}"
            if event["type"] != "data"
            else ", ".join(o["key"] for o in event["objects"])
        )
        click.echo(f"  delivery {delivery['id'][:12]} ({delivery['provider']}, {event['type']}: {what})")
    click.echo(f"  → commit {mv['commit'][:12]}  data {format_data_version(mv['data_version'], 8)}")
    click.echo(f"  → {_dataset_line(mv.get('dataset'))}")
    click.echo(f"  → run #{run['id']} ({' → '.join(s['name'] for s in run['stages'])})")
    click.echo(f"  → {mv['name']} v{mv['version']}  sha256 {mv['sha256'][:16]}…  {mv['metrics']}")
    click.echo(f"  → deployment #{dep['id']} at {dep['url']}")
    if dep.get("approval"):
        click.echo("    " + format_approval(dep["approval"]).replace("\n", "\n    "))


def _dataset_line(dataset: dict[str, Any] | None) -> str:
    if not dataset:
        return "dataset: not recorded"
    files = ", ".join(
        f["path"] + (" (commit)" if f["source"] == "commit" else f" (landed {str(f.get('landed_at'))[:19]})")
        for f in dataset["files"]
    )
    return f"dataset v{dataset['version']} (manifest {dataset['manifest_sha256'][:12]}…): {files}"


def _print_ledger(api: str, first: dict[str, Any], current: dict[str, Any]) -> None:
    """The dataset versions, and the model serving now against v1: after the drop and a later
    push, it still learned from the dropped batch, and its artifact is not v1's."""
    listing = requests.get(f"{api}/api/datasets/churn", timeout=5).json()
    for version in listing["versions"]:
        change = version["trigger"]
        click.echo(
            f"  dataset v{version['version']}: {version['files']} landed file(s), {version['rows']} rows"
            f"  (+{', +'.join(change.get('added', [])) or ' nothing'})"
        )
    now = current["model_version"]
    v1 = requests.get(f"{api}/api/models/churn/versions/{first['model_version']}", timeout=5).json()
    for mv in (v1, now):
        click.echo(f"  {mv['name']} v{mv['version']} ← {_dataset_line(mv.get('dataset'))}")
    differs = "differs from" if now["sha256"] != v1["sha256"] else "is the same as"
    click.echo(f"  v{now['version']}'s artifact {now['sha256'][:16]}… {differs} v1's {v1['sha256'][:16]}…")
    click.echo(f"  rebuild it from this lineage: loopline models reproduce churn {now['version']}")


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:  # the sample project changed under the demo: say so, don't push a no-op
        raise click.ClickException(f"{path.name} has no {old!r} to change")
    path.write_text(text.replace(old, new))


def _set_deploy(work: Path, **keys: Any) -> None:
    """Set ``stages.deploy`` keys in the sample project's ``loopline.yml``."""
    path = work / "loopline.yml"
    config = yaml.safe_load(path.read_text())
    config["stages"]["deploy"].update(keys)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _push(work: Path, env: dict[str, str], message: str) -> None:
    """Commit what changed in the work tree and push it through the hook."""
    _git("commit", "-qam", message, cwd=work)
    subprocess.run(
        ["git", "push", "-q", "origin", "main"], cwd=work, env=env, capture_output=True, check=True
    )


def gate_demo(
    api: str, work: Path, env: dict[str, str], after_id: int, serving: dict[str, Any]
) -> dict[str, Any]:
    """A push that cripples the model: the gate stops it, and production keeps serving."""
    click.echo("\n3. git push: train.C 1.0 → 0.00001, a regularisation that cripples the model")
    _replace(work / "params.yaml", "C: 1.0", "C: 0.00001")
    _push(work, env, "Regularise much harder")
    run = wait_for_run(api, "churn", after_id)
    gate = next((st["detail"] for st in run["stages"] if st["name"] == "evaluate"), None)
    if run["status"] != "gate_failed" or not gate:
        return run
    prod = (gate.get("production") or {}).get("metrics") or {}
    click.echo(f"  {'metric':<10} {'candidate':>10} {'production v' + str(gate['production_version']):>14}")
    for key in ("accuracy", "roc_auc", "log_loss"):
        click.echo(f"  {key:<10} {gate['metrics'][key]:>10.4f} {prod.get(key, float('nan')):>14.4f}")
    click.echo(f"  gate: {gate['verdict']}")
    still = predict(api, "churn")
    if still["model_version"]["sha256"] != serving["model_version"]["sha256"]:
        raise click.ClickException("production changed although the gate failed")
    click.echo(
        f"  production still serves v{still['model_version']['version']}: nothing was registered or deployed"
    )
    return run


def approval_demo(api: str, work: Path, env: dict[str, str], after_id: int, token: str) -> dict[str, Any]:
    """Revert, and from now on a human approves deploys: approve through the API, with a comment."""
    click.echo("\n4. git push: revert that, and require a human's approval before deploying")
    _replace(work / "params.yaml", "C: 0.00001", "C: 1.0")
    _set_deploy(work, approval={"required": True, "branches": ["main"], "expires_after": "24h"})
    _push(work, env, "Revert the regularisation; deploys need an approval")
    shown: set[tuple[str, str]] = set()
    run = wait_for_run(api, "churn", after_id, shown=shown)
    if run["status"] != "awaiting_approval":
        return run
    named = run["approval"]
    what = f"commit {named['commit'][:10]} and v{named['model_version']}"
    click.echo(f"  POST /api/runs/{run['id']}/approve naming {what}, with a comment")
    answer = requests.post(
        f"{api}/api/runs/{run['id']}/approve",
        json={
            "comment": "gate passed, metrics back to normal",
            "commit": named["commit"],
            "model_version": named["model_version"],
        },
        headers={"Authorization": f"Bearer {token}", "X-Loopline-User": "demo"},
        timeout=5,
    )
    if answer.status_code != 200:
        raise click.ClickException(f"approval refused: {answer.text}")
    click.echo("  " + format_approval(answer.json()["approval"]).replace("\n", "\n  "))
    return wait_for_run(api, "churn", run["id"] - 1, shown=shown)


def shifted_rows(n: int, seed: int = 5) -> list[list[float]]:
    """``n`` real rows whose ``mean radius`` (the first feature) is half again as large."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    rows = data[np.random.default_rng(seed).permutation(len(data))[:n]]
    rows[:, 0] *= 1.5
    return rows.tolist()


def drift_demo(api: str, after_id: int, serving: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Clients whose inputs drifted: beat's drift check compares the gateway's sampled inputs
    with the serving model's training data and starts a retrain, naming the features."""
    version = serving["model_version"]["version"]
    click.echo(
        f"\n5. the world changes: clients send inputs whose `mean radius` is 1.5 times v{version}'s data"
    )
    rows = shifted_rows(300)
    deadline, sent, run = time.monotonic() + timeout, 0, None
    with requests.Session() as http:
        while run is None and time.monotonic() < deadline:
            batch = rows[sent % len(rows) : sent % len(rows) + 50]
            http.post(f"{api}/serve/churn/predict", json={"instances": batch}, timeout=10).raise_for_status()
            sent += len(batch)
            runs = requests.get(f"{api}/api/runs", params={"repo": "churn"}, timeout=5).json()["runs"]
            run = next((r for r in runs if r["id"] > after_id and r["trigger"] == "drift"), None)
            if run is None:
                time.sleep(1)
    if run is None:
        raise click.ClickException(f"no drift-triggered run within {timeout:.0f}s")
    click.echo(f"  {sent} predictions through /serve/churn/predict; beat's drift check (every 15 s) says:")
    click.echo(f"  run #{run['id']} [drift]: {run['reason']}")
    click.echo(f"  run #{run['id']}: {' → '.join(run['plan'])}")
    run = wait_for_run(api, "churn", run["id"] - 1, shown={("", "")})  # the run is known: no "waiting"
    if run["status"] == "awaiting_approval":
        click.echo(
            f"  the retrain registered v{run['model_version']}; like every deploy now, it waits for"
            f" a human (loopline approve {run['id']})"
        )
    return run


def _fail(stack: Stack, run: dict[str, Any]) -> int:
    click.echo(f"\nrun #{run['id']} ended {run['status']}: {run.get('reason')}", err=True)
    for stage in run["stages"]:
        if stage["status"] in ("failed", "gate_failed"):
            log = requests.get(f"{stack.url}/api/runs/{run['id']}/stages/{stage['name']}/log", timeout=5).text
            click.echo(
                f"--- log of {stage['name']} (last lines) ---\n" + "\n".join(log.splitlines()[-30:]), err=True
            )
    return 1


#: The demo's copy of the sample project deploys through a short canary trial.
DEMO_CANARY = {"canary_percent": 30, "canary_window_seconds": 8, "min_requests": 5}


#: ... and retrains when its live inputs drift from its training data (sampling every request).
DEMO_DRIFT = {"threshold": 0.2, "min_samples": 200, "sample_rate": 1.0, "window": 300, "cooldown": "1h"}


def deploy_through_a_canary(work: Path) -> None:
    _set_deploy(work, **DEMO_CANARY)
    path = work / "loopline.yml"
    config = yaml.safe_load(path.read_text())
    config["triggers"] = {"drift": DEMO_DRIFT}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    _git("commit", "-qam", "Deploy through a canary trial; retrain when live inputs drift", cwd=work)


class Traffic:
    """Predictions on real rows through the gateway, about 20 a second, as an application
    would send them; counts which version answered."""

    def __init__(self, api: str, model: str) -> None:
        from sklearn.datasets import load_breast_cancer

        self.url = f"{api}/serve/{model}/predict"
        data = load_breast_cancer().data  # every row, in an order: inputs like the training data's
        self.rows = data[[(i * 7) % len(data) for i in range(len(data))]].tolist()
        self.answers: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as http:
            i = 0
            while not self._stop.wait(0.05):
                i += 1
                try:
                    answer = http.post(
                        self.url,
                        json={"instances": [self.rows[i % len(self.rows)]]},
                        headers={"X-Loopline-App": "demo-shop"},  # the dashboard names its callers
                        timeout=5,
                    )
                except requests.RequestException:
                    self.answers["-", 0] += 1
                    continue
                self.answers[answer.headers.get("X-Loopline-Model-Version", "-"), answer.status_code] += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _print_canary(api: str, run: dict[str, Any], traffic: Traffic) -> None:
    deploy = next(st for st in run["stages"] if st["name"] == "deploy")
    detail = deploy.get("detail") or {}
    click.echo("\n  the retrained model's release went through a canary trial")
    answered = ", ".join(f"{n} from v{v} ({status})" for (v, status), n in sorted(traffic.answers.items()))
    click.echo(f"  {sum(traffic.answers.values())} predictions through the gateway ({answered})")
    click.echo(f"  verdict: {detail.get('verdict', 'promote')}: {detail.get('reason', 'no trial')}")
    time.sleep(1.2)  # the web workers add their counts to the store every second
    releases = requests.get(f"{api}/api/models/churn/telemetry", timeout=5).json()["releases"]
    for rel in releases:
        if rel["status"] in ("active", "standby"):
            t = rel["telemetry"]
            click.echo(
                f"  release #{rel['id']} v{rel['version']} {rel['status']:<7} {rel['traffic_percent']:>3}%: "
                f"{t['requests']} requests, {t['errors']} errors, p50 {t['latency_ms']['p50']} ms, "
                f"p99 {t['latency_ms']['p99']} ms, predicted {t['predictions']}"
            )
