"""``loopline data list|show|diff`` (the data ledger) and ``loopline models reproduce``."""

from __future__ import annotations

import json

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
def reproduce(name: str, version: int, as_json: bool) -> None:
    """Rebuild NAME VERSION from its lineage (commit, dataset version, params) in a fresh worktree
    and compare the artifact's sha256 and the metrics; exits 1 when they differ."""
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
