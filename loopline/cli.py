"""The ``loopline`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from loopline import users as users_cli
from pipelines.errors import LooplineError


def _settings() -> Any:
    from config.settings import Settings

    return Settings.from_env()  # a ConfigError is one line, like any LooplineError (see _Group)


class _Group(click.Group):
    """Loopline's own errors, and the system's refusals (a port in use, a missing file), are one
    clear line and exit 1. Anything else is a bug and keeps its traceback; Click's own exits
    (``--help``, ``--version``) pass through untouched."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LooplineError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="loopline")
def main() -> None:
    """Loopline: push code or drop data; get a tested, registered, deployed model."""
    logging.basicConfig(
        level=os.environ.get("LOOPLINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations say nothing unless they fail


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", "-w", default=2, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per worker process.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the web process: gunicorn with service:create_app().

    Threaded workers keep clients' connections alive, which sync workers cannot: through the
    serving gateway that is a third less added latency (``bench/gateway.py``).
    """
    from gunicorn.app.base import BaseApplication

    _settings()  # a bad config is one clear line here, not a traceback in every worker

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            from service import create_app

            return create_app()  # in each worker: no database pool crosses a fork

    _Gunicorn().run()


@main.command()
@click.option("--queue", type=click.Choice(["default", "training"]), default="default", show_default=True)
@click.option("--concurrency", "-c", type=int, default=None, help="Processes (training defaults to 1).")
@click.option("--beat/--no-beat", default=False, help="Also run the periodic reconcile schedule.")
def worker(queue: str, concurrency: int | None, beat: bool) -> None:
    """Run a Celery worker for one queue (the default one also relays the outbox)."""
    from loopline.processes import celery_worker_argv

    settings = _settings()
    argv = celery_worker_argv(
        queue,
        concurrency=concurrency or (1 if queue == "training" else 2),
        relay=queue == "default",
        beat=beat,
        home=settings.home,
    )
    os.execv(argv[0], argv)  # noqa: S606  (argv list, no shell: become the worker)


@main.command()
@click.option("--interval", default=0.5, show_default=True, help="Seconds between scans.")
def watch(interval: float) -> None:
    """Watch the registered drop folders and turn complete new files into data events."""
    from loopline.report import open_store
    from workers.watcher import FolderWatcher

    settings = _settings()
    db = open_store(settings)
    stop = threading.Event()
    try:
        FolderWatcher(settings, db).run(stop, interval)
    except KeyboardInterrupt:
        stop.set()


@main.command()
@click.option("--port", default=8080, show_default=True, type=int)
def up(port: int) -> None:
    """Run web, workers and watcher together until Ctrl-C (embedded broker unless configured)."""
    from loopline.processes import Stack
    from workers.sandbox import describe

    _settings()
    stack = Stack(dict(os.environ), port)
    click.echo("starting Loopline …")
    click.echo(describe())
    with stack:
        # Ctrl-C and SIGTERM (systemd, docker stop) only set a flag: the stop below always runs
        # whole, whatever the main thread was doing when the signal came.
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        click.echo(f"Loopline is up at {stack.url}  (logs: {stack.settings.home / 'logs'}; Ctrl-C stops)")
        while not stop.wait(1):
            stack.supervise(click.echo)  # a process that exits is started again, with backoff
        click.echo("stopping …")


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo's directory for inspection.")
@click.option(
    "--example",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The sample project to use (default: examples/ of this checkout).",
)
@click.option("--keep-running", is_flag=True, help="Keep serving the dashboard afterwards, until Ctrl-C.")
def demo(keep: bool, example: Path | None, keep_running: bool) -> None:
    """Push the sample project, retrain on dropped data, and print what happened."""
    from loopline.demo import run_demo

    sys.exit(run_demo(example=example, keep=keep, keep_running=keep_running))


@main.command()
@click.option(
    "--repo",
    "repo_path",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local git repository, bare or not.",
)
@click.option("--before", default=None, help="Old tip (SHA or ref); omitted or zeros: a new branch.")
@click.option("--after", required=True, help="New tip (SHA or ref).")
@click.option("--branch", default="main", show_default=True, help="Branch pushed to (decides deploy).")
@click.option("--tag", default=None, help="Explain a push of this tag instead (a release).")
@click.option(
    "--deploy-branch",
    "deploy_branches",
    multiple=True,
    default=("main",),
    show_default=True,
    help="Branches that deploy (repeatable); the first is the default branch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def explain(
    repo_path: Path,
    before: str | None,
    after: str,
    branch: str,
    tag: str | None,
    deploy_branches: tuple[str, ...],
    as_json: bool,
) -> None:
    """Dry run: every changed file, the rule that classified it, the kinds and the stages."""
    from loopline.explain import explain_push

    result = explain_push(repo_path, before, after, branch=branch, tag=tag, deploy_branches=deploy_branches)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['ref']} {result['commit'][:12]}, compared with {(result['base'] or '')[:12]}")
    for f in result["files"]:
        click.echo(f"{f['status']}  {f['path']:<50} {f['kind']:<14} ({f['rule']})")
    click.echo(f"kinds:  {', '.join(result['kinds']) or '(none)'}")
    click.echo(f"stages: {' → '.join(result['stages']) or '(none)'}")
    click.echo(f"reason: {result['reason']}")


@main.command()
@click.argument("run_id", required=False, type=int)
@click.option("--repo", default=None)
@click.option("--status", default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(run_id: int | None, repo: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List runs, or show one run with its stages."""
    from loopline.report import list_runs, show_run

    click.echo(
        show_run(_settings(), run_id, as_json)
        if run_id
        else list_runs(_settings(), repo, status, limit, as_json)
    )


@main.command()
@click.argument("run_id", type=int)
@click.option("--reject", is_flag=True, help="Reject instead of approving.")
@click.option("--comment", default=None, help="Recorded with the decision.")
@click.option("--commit", default=None, help="Approve only if the run ships this commit (7+ characters).")
@click.option("--model-version", type=int, default=None, help="Approve only if the run ships this version.")
def approve(
    run_id: int, reject: bool, comment: str | None, commit: str | None, model_version: int | None
) -> None:
    """Approve (or --reject) a run that waits for approval before deploying."""
    from loopline.report import format_approval, format_run, open_store
    from store import runs, views

    db = open_store(_settings())
    by = os.environ.get("USER") or "cli"
    try:
        if reject:
            runs.reject(db, run_id, by=by, comment=comment)
        else:
            runs.approve(db, run_id, by=by, comment=comment, commit=commit, model_version=model_version)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    with db.session() as s:
        data = views.run(s, run_id)
    assert data is not None
    click.echo(format_run(data) + "\n" + format_approval(data["approval"]))


@main.command()
@click.argument("run_id", type=int)
def retry(run_id: int) -> None:
    """Run a failed, gate-failed or cancelled run again: a new attempt at the same commit."""
    from loopline.report import format_run, open_store
    from store import runs, views

    db = open_store(_settings())
    try:
        again = runs.retry(db, run_id, by=os.environ.get("USER") or "cli")
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    with db.session() as s:
        data = views.run(s, again.id)
    assert data is not None
    click.echo(format_run(data))


@main.command("run")
@click.argument("repo")
@click.option(
    "--branch", default=None, help="Branch whose tip runs (default: the repository's first branch)."
)
@click.option("--reason", default=None, help="Recorded with the run and in its model's lineage.")
@click.option(
    "--wait", "wait_seconds", type=float, default=0, help="Seconds to wait for the run to be planned."
)
def run_cmd(repo: str, branch: str | None, reason: str | None, wait_seconds: float) -> None:
    """Start a run of REPO's branch by hand, as `POST /api/repos/REPO/runs` does."""
    import time
    import uuid

    from loopline.report import format_run, open_store
    from pipelines.events import valid_ref
    from store import views
    from store.triggers import request_run

    settings = _settings()
    config = settings.repo(repo)
    if config is None:
        raise click.ClickException(f"repository {repo!r} is not registered in {settings.config_path}")
    branch = branch or config.default_branch
    if not valid_ref(f"refs/heads/{branch}"):
        raise click.ClickException(f"{branch!r} is not a valid branch name")
    db = open_store(settings)
    who = os.environ.get("USER") or "cli"
    recorded = request_run(
        db,
        repository=repo,
        trigger="manual",
        ref=f"refs/heads/{branch}",
        reason=f"manual run by {who}" + (f": {reason}" if reason else ""),
        key=uuid.uuid4().hex,
    )
    click.echo(f"event {recorded.event_id} accepted: a manual run of {repo} {branch}")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        with db.session() as s:
            status, error, run = views.event_outcome(s, recorded.event_id)
        if run is not None:
            click.echo(format_run(run))
            return
        if status == "failed":
            raise click.ClickException(f"event {recorded.event_id} failed: {error}")
        time.sleep(0.2)
    if wait_seconds:
        raise click.ClickException(f"no run within {wait_seconds:g}s: are the workers running?")


@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The model registry: `list` (the default) and `show NAME [VERSION]`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(as_json: bool) -> None:
    """Every registered model: versions, the newest, the one serving now."""
    from loopline.report import list_models

    click.echo(list_models(_settings(), as_json))


@models.command("show")
@click.argument("name")
@click.argument("version", required=False, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
def models_show(name: str, version: int | None, as_json: bool) -> None:
    """The versions of NAME, or VERSION with its whole lineage chain."""
    from loopline.report import show_model, show_version

    settings = _settings()
    click.echo(
        show_model(settings, name, as_json)
        if version is None
        else show_version(settings, name, version, as_json)
    )


@models.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--comment", default=None, help="Recorded with the alias move.")
def promote(name: str, version: int, comment: str | None) -> None:
    """Send all of NAME's traffic to VERSION (starting its release if needed); alias production."""
    from loopline.report import open_store, show_releases
    from workers import releases

    settings = _settings()
    db = open_store(settings)
    releases.promote(settings, db, name, version, actor=_user(), reason=comment, say=_progress)
    click.echo(show_releases(db, name))


@models.command()
@click.argument("name")
@click.option("--comment", default=None, help="Recorded with the alias move.")
def rollback(name: str, comment: str | None) -> None:
    """Abort NAME's canary, else switch back to the previous release (restarting it if needed)."""
    from loopline.report import open_store, show_releases
    from workers import releases

    settings = _settings()
    db = open_store(settings)
    releases.rollback(settings, db, name, actor=_user(), reason=comment, say=_progress)
    click.echo(show_releases(db, name))


def _register_ledger() -> None:
    from loopline.ledger import data, reproduce

    main.add_command(data)
    models.add_command(reproduce)


_register_ledger()


def _user() -> str:
    return f"user:{os.environ.get('USER') or 'cli'}"


def _progress(line: str) -> None:
    click.echo(f"  … {line}", err=True)


@main.command()
@click.argument("event_id")
def events(event_id: str) -> None:
    """Show one delivery: its normalized event, status and runs."""
    from loopline.report import show_event

    click.echo(show_event(_settings(), event_id))


@main.command("install-hook")
@click.argument("bare_repo", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--url", required=True, help="Loopline's generic hook URL, e.g. http://127.0.0.1:8080/hooks/git"
)
@click.option(
    "--repository", default=None, help="Name sent in the payload (default: the repo's directory name)."
)
@click.option(
    "--secret-env",
    default="LOOPLINE_HOOK_SECRET",
    show_default=True,
    help="Environment variable the hook signs with, when set.",
)
def install_hook_cmd(bare_repo: Path, url: str, repository: str | None, secret_env: str) -> None:
    """Write a post-receive hook into BARE_REPO that notifies Loopline of every push."""
    from loopline.hook import install_hook

    path = install_hook(bare_repo, url, repository, secret_env)
    click.echo(f"installed {path}")


main.add_command(users_cli.group)


@main.command()
def doctor() -> None:
    """Say how project commands run here: the sandbox mode, uv, interpreters (exit 1: no sandbox)."""
    from loopline.doctor import report

    lines, sandboxed = report(_settings().home)
    for line in lines:
        click.echo(line)
    if not sandboxed:
        sys.exit(1)
