"""Turn stored deliveries into a planned run: fetch, diff, classify, plan, prepare a worktree.

Idempotent: a redelivered intake task finds the run it already made.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from loopline.settings import Settings
from pipelines.classify import Classification, FileClass, classify
from pipelines.config import ConfigError, ProjectConfig
from pipelines.events import Event
from pipelines.plan import plan
from store import deliveries
from store.db import Database
from store.models import Delivery, Run, Stage, utcnow
from workers.gitops import GitError, Mirror
from workers.projects import mirror, project_at, workspace

log = logging.getLogger(__name__)
SKIP_MARKERS = ("[skip ci]", "[ci skip]", "[loopline skip]")


@dataclass(frozen=True)
class Prepared:
    run_id: int | None
    #: Stages to publish now (empty when the run ended at intake or was made before).
    stages: tuple[str, ...] = ()


class IntakeError(RuntimeError):
    pass


def prepare_run(settings: Settings, db: Database, delivery_ids: list[str]) -> Prepared:
    with db.session() as s:
        rows = list(s.scalars(select(Delivery).where(Delivery.id.in_(delivery_ids))))
    if not rows:
        return Prepared(None)
    done = next((r.run_id for r in rows if r.run_id), None)
    if done is not None:
        return Prepared(done)
    repo = settings.repo(rows[0].repository)
    if repo is None:
        deliveries.finish(
            db, delivery_ids, run_id=None, error=f"repository {rows[0].repository!r} is no longer registered"
        )
        return Prepared(None)
    events = [Event.from_dict(r.event) for r in rows]
    first = events[0]
    if first.type == "delete":
        deliveries.finish(db, delivery_ids, run_id=None)
        return Prepared(None)
    mirror_ = mirror(settings, repo)
    try:
        mirror_.update()
        if first.type == "data":
            commit = mirror_.resolve(f"refs/heads/{repo.default_branch}")
            if commit is None:
                raise IntakeError(f"branch {repo.default_branch!r} does not exist yet; push code first")
            ref, base = f"refs/heads/{repo.default_branch}", commit
        else:
            assert first.after and first.before and first.ref
            if not mirror_.has_commit(first.after):
                raise IntakeError(f"commit {first.after} is not in {repo.url} (yet)")
            commit, ref = first.after, first.ref
            base = mirror_.base_for(first.before, commit, f"refs/heads/{repo.default_branch}")
    except (GitError, IntakeError) as exc:
        deliveries.finish(db, delivery_ids, run_id=None, error=str(exc))
        log.warning("intake %s failed: %s", delivery_ids, exc)
        return Prepared(None)

    trigger = "data" if first.type == "data" else first.type
    run = Run(
        repository=repo.name,
        ref=ref,
        commit=commit,
        before=None if first.type == "data" else base,
        trigger=trigger,
        status="queued",
    )
    try:
        project = project_at(settings, repo, commit)
    except ConfigError as exc:
        return _finish_config_error(db, run, delivery_ids, exc)

    if first.type == "data":
        objects = [o for e in events for o in e.objects]
        classification = Classification(
            kinds=("data",),
            files=tuple(
                FileClass(
                    path=f"{project.data_into}/{o.key}",
                    status="A",
                    kind="data",
                    rule=f"data_lake: {o.store} {o.bucket}",
                )
                for o in objects
            ),
        )
        run.reason = f"{len(objects)} new data file(s)"
        key = f"{repo.name}|data|{','.join(sorted(delivery_ids))}"
    else:
        changes = mirror_.changed_files(base, commit)
        classification = classify(changes, project.rules)
        key = f"{repo.name}|{ref}|{commit}|{','.join(classification.kinds)}"
    message = first.message if first.type != "data" else None
    if first.type != "data" and message is None:
        message = mirror_.message(commit)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    planned = plan(
        classification.kinds,
        deployable=branch in repo.branches,
        approval=project.deploy.approval == "required",
    )
    stages = planned.stages
    if message and any(m in message.lower() for m in SKIP_MARKERS):
        stages, run.reason = (), "commit message asks to skip CI"
    elif first.type == "tag":
        stages, run.reason = (), "tag pushes do not run pipelines yet"
    run.kinds, run.plan = list(classification.kinds), list(stages)
    run.classification = classification.to_dict()
    run.reason = run.reason or planned.reason
    run.dedupe_key = key
    if not stages:
        run.status, run.finished_at = "skipped", utcnow()
    run_id = _insert(db, run, stages)
    if run_id is None:  # the same (repo, ref, commit, kinds) already has a run: join it
        with db.session() as s:
            run_id = s.scalars(select(Run.id).where(Run.dedupe_key == key)).one()
        deliveries.finish(db, delivery_ids, run_id=run_id)
        return Prepared(run_id)
    if stages:
        try:
            _make_workspace(settings, mirror_, project, run_id, commit, events)
            with db.session() as s:
                s.get(Run, run_id).workspace = str(workspace(settings, run_id))  # type: ignore[union-attr]
        except (GitError, OSError, IntakeError) as exc:
            _fail(db, run_id, f"workspace: {exc}")
            deliveries.finish(db, delivery_ids, run_id=run_id)
            return Prepared(run_id)
    deliveries.finish(db, delivery_ids, run_id=run_id)
    return Prepared(run_id, stages)


def _insert(db: Database, run: Run, stages: tuple[str, ...]) -> int | None:
    try:
        with db.session() as s:
            s.add(run)
            s.flush()
            for i, name in enumerate(stages):
                s.add(Stage(run_id=run.id, name=name, position=i, status="queued"))
            return run.id
    except IntegrityError:
        return None


def _fail(db: Database, run_id: int, reason: str) -> None:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.reason, run.finished_at = "failed", reason, utcnow()
        for stage in run.stages:
            stage.status = "skipped"


def _finish_config_error(db: Database, run: Run, ids: list[str], exc: ConfigError) -> Prepared:
    """A broken ``loopline.yml`` is a failed ``config`` stage with the message, not a crash."""
    now = utcnow()
    run.status, run.reason, run.finished_at = "failed", str(exc), now
    run.dedupe_key = f"{run.repository}|{run.ref}|{run.commit}|config"
    run.plan = ["config"]
    with db.session() as s:
        s.add(run)
        s.flush()
        s.add(
            Stage(
                run_id=run.id,
                name="config",
                position=0,
                status="failed",
                started_at=now,
                finished_at=now,
                exit_code=1,
                log=f"{exc}\n",
            )
        )
        run_id = run.id
    deliveries.finish(db, ids, run_id=run_id)
    return Prepared(run_id)


def _make_workspace(
    settings: Settings, mirror_: Mirror, project: ProjectConfig, run_id: int, commit: str, events: list[Event]
) -> None:
    path = workspace(settings, run_id)
    if path.exists():
        mirror_.remove_worktree(path)
        shutil.rmtree(path, ignore_errors=True)
    mirror_.add_worktree(path, commit)
    into = path / project.data_into
    for event in events:
        for obj in event.objects:
            if obj.store != "folder":
                raise IntakeError(f"fetching from {obj.store} is not supported yet")
            key = PurePosixPath(obj.key)
            if key.is_absolute() or ".." in key.parts:
                raise IntakeError(f"refusing object key {obj.key!r}")
            source = Path(obj.bucket) / key
            dest = into / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest, follow_symlinks=False)
