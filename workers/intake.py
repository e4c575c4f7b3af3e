"""Turn stored deliveries into a planned run: fetch, diff, classify, plan, prepare a worktree.

Idempotent: the run and its link to the deliveries are written in one transaction, so a
redelivered intake task finds the run it made and only finishes what was left undone.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from loopline.settings import Settings
from pipelines.classify import Classification, FileClass, classify
from pipelines.config import ConfigError, ProjectConfig, RepoConfig
from pipelines.events import Event
from pipelines.plan import plan
from store import deliveries
from store.db import Database
from store.models import Delivery, Run, Stage, utcnow
from workers.gitops import GitError, Mirror
from workers.projects import mirror, project_at, project_in, workspace

log = logging.getLogger(__name__)
SKIP_MARKERS = ("[skip ci]", "[ci skip]", "[loopline skip]")


@dataclass(frozen=True)
class Prepared:
    run_id: int | None
    #: Stages to publish now (empty when the run ended at intake or was published before).
    stages: tuple[str, ...] = ()


class IntakeError(RuntimeError):
    pass


def prepare_run(settings: Settings, db: Database, delivery_ids: list[str]) -> Prepared:
    with db.session() as s:
        rows = list(s.scalars(select(Delivery).where(Delivery.id.in_(delivery_ids))))
    if not rows:
        return Prepared(None)
    events = [Event.from_dict(r.event) for r in rows]
    made = next((r.run_id for r in rows if r.run_id), None)
    if made is not None:  # a redelivered intake: the run exists; finish what was left undone
        if all(r.status == "processed" for r in rows):
            return Prepared(made)
        return _ready(settings, db, made, events)
    repo = settings.repo(rows[0].repository)
    if repo is None:
        deliveries.finish(
            db, delivery_ids, run_id=None, error=f"repository {rows[0].repository!r} is not registered"
        )
        return Prepared(None)
    first = events[0]
    if first.type == "delete":  # recorded; never starts a pipeline
        deliveries.finish(db, delivery_ids, run_id=None)
        return Prepared(None)
    mirror_ = mirror(settings, repo)
    try:
        ref, commit, base = _locate(mirror_, repo, first)
    except (GitError, IntakeError) as exc:
        log.warning("intake %s failed: %s", delivery_ids, exc)
        deliveries.finish(db, delivery_ids, run_id=None, error=str(exc))
        return Prepared(None)
    run = Run(
        repository=repo.name,
        ref=ref,
        commit=commit,
        before=base if first.type != "data" else None,
        trigger=first.type,
        status="queued",
    )
    try:
        project = project_at(settings, repo, commit)
    except ConfigError as exc:  # a failed `config` stage with the message, not a crash
        now = utcnow()
        run.status, run.reason, run.finished_at, run.plan = "failed", str(exc), now, ["config"]
        run.dedupe_key = f"{repo.name}|{ref}|{commit}|config"
        run.stages = [
            Stage(
                name="config",
                position=0,
                status="failed",
                started_at=now,
                finished_at=now,
                exit_code=1,
                log=f"{exc}\n",
            )
        ]
        return _insert(db, run, delivery_ids)
    classification = _classify(mirror_, project, first, events, base, commit)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    planned = plan(
        classification.kinds,
        deployable=branch in repo.branches,
        approval=project.deploy.approval.applies_to(branch),
    )
    stages, run.reason = planned.stages, planned.reason
    message = first.message or (mirror_.message(commit) if first.type != "data" else "")
    if any(marker in message.lower() for marker in SKIP_MARKERS):
        stages, run.reason = (), "commit message asks to skip CI"
    elif first.type == "tag":
        stages, run.reason = (), "tag pushes do not run pipelines yet"
    if first.type == "data":
        run.reason = f"{len(classification.files)} new data file(s)"
        run.dedupe_key = f"{repo.name}|data|{','.join(sorted(delivery_ids))}"
    else:
        run.dedupe_key = f"{repo.name}|{ref}|{commit}|{','.join(classification.kinds)}"
    run.kinds, run.plan, run.classification = (
        list(classification.kinds),
        list(stages),
        classification.to_dict(),
    )
    run.stages = [Stage(name=name, position=i, status="queued") for i, name in enumerate(stages)]
    if not stages:
        run.status, run.finished_at = "skipped", utcnow()
    prepared = _insert(db, run, delivery_ids)
    if prepared.run_id is None or not stages or prepared.run_id != run.id:
        return prepared
    return _ready(settings, db, run.id, events, mirror_)


def _locate(mirror_: Mirror, repo: RepoConfig, event: Event) -> tuple[str, str, str]:
    """Fetch, then return (ref, commit, base to diff against) for the event."""
    mirror_.update()
    default = f"refs/heads/{repo.default_branch}"
    if event.type == "data":  # new data retrains what the default branch holds now
        commit = mirror_.resolve(default)
        if commit is None:
            raise IntakeError(f"branch {repo.default_branch!r} does not exist yet; push code first")
        return default, commit, commit
    assert event.ref and event.before and event.after
    if not mirror_.has_commit(event.after):
        raise IntakeError(f"commit {event.after} is not in {repo.url} (yet)")
    return event.ref, event.after, mirror_.base_for(event.before, event.after, default)


def _classify(
    mirror_: Mirror, project: ProjectConfig, first: Event, events: list[Event], base: str, commit: str
) -> Classification:
    if first.type != "data":
        return classify(mirror_.changed_files(base, commit), project.rules)
    files = tuple(
        FileClass(
            path=f"{project.data_into}/{o.key}",
            status="A",
            kind="data",
            rule=f"data_lake: {o.store} {o.bucket}",
        )
        for e in events
        for o in e.objects
    )
    return Classification(files=files, kinds=("data",))


def _insert(db: Database, run: Run, delivery_ids: list[str]) -> Prepared:
    """Write the run and link its deliveries in one transaction. If the same (repo, ref,
    commit, kinds) already has a run, the deliveries join that one instead."""
    try:
        with db.session() as s:
            s.add(run)
            s.flush()
            s.execute(update(Delivery).where(Delivery.id.in_(delivery_ids)).values(run_id=run.id))
        if run.status != "queued":
            deliveries.finish(db, delivery_ids, run_id=run.id)
        return Prepared(run.id)
    except IntegrityError:
        with db.session() as s:
            existing = s.scalars(select(Run.id).where(Run.dedupe_key == run.dedupe_key)).one()
        deliveries.finish(db, delivery_ids, run_id=existing)
        return Prepared(existing)


def _ready(
    settings: Settings, db: Database, run_id: int, events: list[Event], mirror_: Mirror | None = None
) -> Prepared:
    """Make sure a queued run has its worktree; return the stages still to publish."""
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        queued = tuple(st.name for st in run.stages if st.status == "queued")
        if run.status != "queued" or len(queued) != len(run.stages):
            return Prepared(run_id)  # already under way
        repo = settings.repo(run.repository)
        commit, has_workspace = run.commit or "", run.workspace is not None
    if not has_workspace:
        try:
            if repo is None:
                raise IntakeError(f"repository {run.repository!r} is not registered")
            _make_workspace(settings, mirror_ or mirror(settings, repo), run_id, commit, events)
        except (ConfigError, GitError, OSError, IntakeError) as exc:
            _fail(db, run_id, f"workspace: {exc}")
            return Prepared(run_id)
        with db.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(workspace=str(workspace(settings, run_id))))
    return Prepared(run_id, queued)


def _fail(db: Database, run_id: int, reason: str) -> None:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.reason, run.finished_at = "failed", reason, utcnow()
        for stage in run.stages:
            stage.status = "skipped"
        ids = [d.id for d in run.deliveries]
    deliveries.finish(db, ids, run_id=run_id)


def _make_workspace(
    settings: Settings, mirror_: Mirror, run_id: int, commit: str, events: list[Event]
) -> None:
    """A worktree at the exact commit, with dropped data files copied into ``data.into``."""
    path = workspace(settings, run_id)
    if path.exists():
        mirror_.remove_worktree(path)
        shutil.rmtree(path, ignore_errors=True)
    mirror_.add_worktree(path, commit)
    into = path / project_in(path).data_into
    for event in events:
        for obj in event.objects:
            if obj.store != "folder":
                raise IntakeError(f"fetching from {obj.store} is not supported yet")
            key = PurePosixPath(obj.key)
            if key.is_absolute() or ".." in key.parts:
                raise IntakeError(f"refusing object key {obj.key!r}")
            dest = into / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(obj.bucket) / key, dest, follow_symlinks=False)
