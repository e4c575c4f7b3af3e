"""``loopline data list|show|diff`` (the data ledger) and ``loopline models reproduce``."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any
from urllib.parse import quote

import click

from config.settings import Settings
from pipelines import ledger
from store import datasets, views


def _settings() -> Settings:
    return Settings.from_env()  # a ConfigError is one line: the CLI's group turns it into one


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group()
def data() -> None:
    """The data ledger: `list REPO`, `show REPO N`, `diff REPO N M`."""


@data.command("list")
@click.argument("repo")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
def data_list(repo: str, as_json: bool) -> None:
    """REPO's dataset versions, newest first."""
    from loopline.report import open_store

    with open_store(_settings()).session() as s:
        rows = views.dataset_versions(s, repo)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"{repo}: nothing landed yet (version 0: the repository's own files only)")
        return
    for v in rows:
        change = v["trigger"]
        what = ", ".join(
            f"{label} {len(change.get(key, []))}"
            for key, label in (("added", "+"), ("replaced", "~"), ("removed", "-"))
            if change.get(key)
        )
        click.echo(
            f"v{v['version']:<4} {v['created_at'][:19].replace('T', ' ')}  {v['files']:>5} file(s)"
            f"  {_size(v['bytes']):>9}  rows {v['rows'] if v['rows'] is not None else '-':>7}"
            f"  {v['manifest_sha256'][:12]}  {change.get('kind', '-')}: {what or 'no change'}"
            + (f"  run #{v['run_id']}" if v["run_id"] else "")
        )


@data.command("show")
@click.argument("repo")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
def data_show(repo: str, number: int, as_json: bool) -> None:
    """Dataset version NUMBER of REPO: its manifest, what made it, the models trained on it."""
    from loopline.report import open_store

    with open_store(_settings()).session() as s:
        found = datasets.get(s, repo, number)
        if found is None:
            raise click.ClickException(f"{repo} has no dataset version {number}")
        record = views.dataset_detail(s, found)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(
        f"{repo} dataset v{record['version']} (from v{record['parent']})"
        f"  manifest {record['manifest_sha256']}"
    )
    for entry in record["manifest"]:
        source = entry.get("source") or {}
        click.echo(
            f"  {entry['path']:<40} {_size(entry['size']):>9}  rows {entry.get('rows') or '-':>6}"
            f"  {entry['sha256'][:12]}  {source.get('url', '')}"
        )
    validation = record["validation"]
    if validation:
        click.echo(
            f"validate_data: {validation['status']}"
            + (f": {validation['reason']}" if validation.get("reason") else "")
        )
    for mv in record["models"]:
        click.echo(f"trained: {mv['name']} v{mv['version']} (sha256 {mv['sha256'][:16]}…)")


@data.command("diff")
@click.argument("repo")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
def data_diff(repo: str, old: int, new: int, as_json: bool) -> None:
    """What changed from dataset version OLD to NEW of REPO (0: nothing landed)."""
    from loopline.report import open_store

    db = open_store(_settings())
    try:
        before, _ = datasets.manifest(db, repo, old)
        after, _ = datasets.manifest(db, repo, new)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    change = ledger.diff(before, after)
    if as_json:
        click.echo(json.dumps(change, indent=2))
        return
    for e in change["added"]:
        click.echo(f"+ {e['path']}  rows {e['rows'] if e['rows'] is not None else '-'}")
    for e in change["removed"]:
        click.echo(f"- {e['path']}  rows {e['rows'] if e['rows'] is not None else '-'}")
    for e in change["replaced"]:
        click.echo(f"~ {e['path']}  rows {e['from']['rows']} → {e['to']['rows']}")
    rows = change["rows"]
    click.echo(f"rows: {rows['from']} → {rows['to']}")


@click.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--remote",
    metavar="URL",
    default=None,
    help="Ask the Loopline server at URL (its trainer rebuilds it) and wait; the token is "
    "$LOOPLINE_API_TOKEN or an approver's.",
)
def reproduce(name: str, version: int, as_json: bool, remote: str | None) -> None:
    """Rebuild NAME VERSION from its lineage (commit, dataset version, params) in a fresh worktree
    and compare the artifact's sha256 and the metrics; exits 1 when they differ."""
    if remote:
        record = _ask(remote, name, version)
        click.echo(json.dumps(record, indent=2) if as_json else _format_record(record))
        if record["status"] != "succeeded":
            click.echo(f"whole log: {remote.rstrip('/')}{record['url']}/log", err=True)
            raise SystemExit(1)
        return
    from loopline.report import open_store
    from workers.reproduce import ReproduceError, format_report
    from workers.reproduce import reproduce as rebuild

    settings = _settings()
    try:
        report = rebuild(
            settings,
            open_store(settings),
            name,
            version,
            say=lambda line: click.echo(f"  … {line}", err=True),
        )
    except ReproduceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if not report["reproduced"]:
        raise SystemExit(1)


def _ask(url: str, name: str, version: int) -> dict[str, Any]:
    """``POST …/reproduce`` on the server, then its record until it ends (progress on stderr)."""
    import requests

    base = url.rstrip("/")
    token = os.environ.get("LOOPLINE_API_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    try:
        answer = requests.post(
            f"{base}/api/models/{quote(name, safe='')}/versions/{version}/reproduce",
            headers=headers,
            timeout=30,
        )
        if answer.status_code not in (200, 202):
            raise click.ClickException(f"{base}: {answer.status_code} {_message(answer)}")
        record, location, seen = answer.json(), answer.headers["Location"], ""
        while record["status"] in ("queued", "running"):
            if record["status"] != seen:
                seen = record["status"]
                click.echo(f"  … reproduction {record['id']} {seen}", err=True)
            time.sleep(1)
            polled = requests.get(base + location, timeout=30)
            if polled.ok:  # a moment's 503 (the store) is asked again
                record = polled.json()
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from exc
    return dict(record)


def _message(answer: Any) -> str:
    try:
        return str(answer.json().get("message"))
    except ValueError:
        return answer.text[:200]


def _format_record(record: dict[str, Any]) -> str:
    head = f"{record['model']} v{record['version']}: reproduction {record['id']} {record['status']}"
    result = record.get("result")
    if not result:
        return f"{head}: {record['reason']}"
    return "\n".join(
        [
            f"{head} in {record['seconds']}s: {record['reason']}",
            f"  commit      {result['commit']}",
            f"  dataset     version {result['dataset_version']}: files "
            + ("same" if result["data_matches"] else "DIFFERENT"),
            f"  artifact    sha256 {result['sha256']['got']} (expected {result['sha256']['expected']})",
            "  metrics     " + ("same" if result["metrics"]["matches"] else "DIFFERENT"),
        ]
    )
