"""Turn stored deliveries into a planned run: fetch, then record what :func:`workers.explain.explain`
says (diff, classification, plan), then prepare a worktree.

Idempotent: the run and its link to the deliveries are written in one transaction, so a
redelivered intake task finds the run it made and only finishes what was left undone.

Supersession: intake holds a per-repository lock from the fetch to the run's insert, so the
mirror's branch tips only move forward and runs of a branch are planned in push order. A push
whose commit is no longer its branch's tip came late (a newer push was fetched already): its
run is recorded ``cancelled``, "superseded by run N", and never starts. A push that is the tip
cancels the branch's older queued, running and waiting runs (a deploy under way finishes).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig
from pipelines.errors import LooplineError
from pipelines.events import TRIGGERS, DataObject, Event, sequencer_order
from store import datasets, deliveries, objects, runs
from store.blobs import BlobError
from store.clock import utcnow
from store.db import Database
from store.lifecycle import TERMINAL, end_run, move_run, move_stage
from workers import datasets as ledger
from workers.explain import explain, locate
from workers.fetch import FetchError
from workers.gitops import GitError, Mirror
from workers.locks import intake_lock, mirror_lock
from workers.projects import mirror, project_at, project_in, workspace

if TYPE_CHECKING:
    from store.models import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    run_id: int | None
    #: Stages to publish now (empty when the run ended at intake or was published before).
    stages: tuple[str, ...] = ()


class IntakeError(LooplineError, RuntimeError):
    pass


class Busy(LooplineError, RuntimeError):
    """Another intake of the repository holds its lock: this one goes back to the outbox rather
    than hold a worker slot (a Git host that hangs delays its own repository only)."""


def prepare_run(settings: Settings, db: Database, delivery_ids: list[str]) -> Prepared:
    rows = deliveries.batch(db, delivery_ids)
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
    batch = batch_objects(db, events) if first.type == "data" else []
    wanted = [o for o in batch if not o.removed]
    if first.type == "delete" or (first.type == "data" and not wanted):
        # Recorded; never starts a pipeline: a deletion stored by an earlier version, or only removed
        # or superseded objects (removals make a dataset version without them, for later runs).
        if batch:
            ledger.land(settings, db, repo, batch, deliveries=delivery_ids)
        deliveries.finish(db, delivery_ids, run_id=None)
        return Prepared(None)
    with intake_lock(db, repo.name) as mine:
        if not mine:
            raise Busy(repo.name)
        return _plan(settings, db, repo, delivery_ids, events, wanted)


def _plan(
    settings: Settings,
    db: Database,
    repo: RepoConfig,
    delivery_ids: list[str],
    events: list[Event],
    wanted: list[DataObject],
) -> Prepared:
    """Fetch, classify, plan and record the run; the caller holds the repository's lock."""
    first = events[0]
    mirror_ = mirror(settings, repo)
    try:
        with mirror_lock(settings.home, repo.name):
            mirror_.update()
        ref, commit = locate(mirror_, repo, first)
        since = _last_built(db, mirror_, repo.name, ref, commit) if first.type == "push" else None
    except GitError as exc:
        log.warning("intake %s failed: %s", delivery_ids, exc)
        deliveries.finish(db, delivery_ids, run_id=None, error=str(exc))
        return Prepared(None)
    run = runs.new(repository=repo.name, ref=ref, commit=commit, trigger=first.type)
    if first.type != "data":  # a data run's version is the one its objects land as
        run.dataset_version = datasets.current_number(db, repo.name)
    try:
        project = project_at(settings, repo, commit)
    except ConfigError as exc:  # a failed `config` stage with the message, not a crash
        now = utcnow()
        run.plan, run.dedupe_key = ["config"], f"{repo.name}|{ref}|{commit}|config"
        config = runs.new_stage("config", 0, started_at=now, exit_code=1, log=f"{exc}\n")
        run.stages = [config]
        move_stage(config, "failed", now=now)
        move_run(run, "failed", reason=str(exc), now=now)
        return _insert(db, run, delivery_ids)
    if first.type == "data" and project.triggers.volume is not None:
        return _land_for_volume(settings, db, repo, delivery_ids, events)
    explained = explain(mirror_, repo, project, events, ref, commit, objects=wanted, since=since)
    classification, stages = explained.classification, explained.plan.stages
    run.before, run.reason = explained.base, explained.plan.reason
    if first.type != "data":
        run.message, run.author = mirror_.message(commit).strip()[:2000], mirror_.author(commit)[:200]
    if first.type == "data":
        run.reason = f"{len(classification.files)} new data file(s)"
        batch = hashlib.sha256(",".join(sorted(delivery_ids)).encode()).hexdigest()
        run.dedupe_key = f"{repo.name}|data|{batch}"
    elif first.type == "tag":
        run.dedupe_key = f"{repo.name}|{ref}|{commit}|release"
    elif first.type in TRIGGERS:  # one run per trigger delivery (a schedule's tick, a drift episode)
        run.dedupe_key = f"{repo.name}|{first.type}|{delivery_ids[0]}"
    else:
        run.dedupe_key = f"{repo.name}|{ref}|{commit}|{','.join(classification.kinds)}"
    run.kinds, run.plan, run.classification = (
        list(classification.kinds),
        list(stages),
        classification.to_dict(),
    )
    run.stages = [runs.new_stage(name, i) for i, name in enumerate(stages)]
    tip = mirror_.resolve(ref) if first.type == "push" else commit
    if tip != commit:  # a newer push of this branch was fetched already: this one came late
        _late(db, run, repo.name, ref, tip)
    elif not stages:
        move_run(run, "skipped")
    prepared = _insert(db, run, delivery_ids)
    if prepared.run_id != run.id or run.status in TERMINAL:
        return prepared
    if first.type in ("push", "manual"):  # automatic triggers never cancel anybody's run
        runs.supersede(db, run.id)
    return _ready(settings, db, run.id, events, mirror_)


def _land_for_volume(
    settings: Settings, db: Database, repo: RepoConfig, delivery_ids: list[str], events: list[Event]
) -> Prepared:
    """With ``triggers.volume`` a landing only makes a dataset version: the volume check (beat)
    retrains once enough rows have landed since the serving model's version."""
    try:
        number = ledger.land(settings, db, repo, batch_objects(db, events), deliveries=delivery_ids)
    except (FetchError, BlobError, OSError) as exc:
        deliveries.finish(db, delivery_ids, run_id=None, error=f"landing: {exc}")
        return Prepared(None)
    log.info("intake: %s: dataset v%d landed; triggers.volume decides when to retrain", repo.name, number)
    deliveries.finish(db, delivery_ids, run_id=None)
    return Prepared(None)


def _last_built(db: Database, mirror_: Mirror, repository: str, ref: str, commit: str) -> str | None:
    """The commit of the branch's last finished run when this push descends from it. Diffing
    against it (not the push's ``before``) keeps the changes of pushes whose runs were
    superseded, or came late, in this run's plan."""
    last = runs.last_built(db, repository, ref)
    return last if last and last != commit and mirror_.is_ancestor(last, commit) else None


def _late(db: Database, run: Run, repository: str, ref: str, tip: str | None) -> None:
    """Record a run for a commit its branch has moved past as cancelled, naming the newer run."""
    newer = runs.newest_of_commit(db, repository, ref, tip)
    if newer is not None:
        run.reason = f"superseded by run {newer}"
    elif tip is None:
        run.reason = f"{ref} no longer exists"
    else:
        run.reason = f"superseded: {ref} is now at {tip[:12]}"
    end_run(run, "cancelled", reason=run.reason, rest="cancelled")
    run.superseded_by = newer


def wanted_objects(db: Database, events: list[Event]) -> list[DataObject]:
    """What a data run fetches: per object the newest event of the batch (by sequencer, else by
    arrival), unless that is a removal or a newer event has been recorded since. So an older
    event never overrides a newer one, and a removed object is never fetched."""
    return [o for o in batch_objects(db, events) if not o.removed]


def batch_objects(db: Database, events: list[Event]) -> list[DataObject]:
    """Per object the newest event of the batch, removals included, unless a newer event has
    been recorded since."""
    newest: dict[str, DataObject] = {}
    for item in (o for e in events for o in e.objects):
        oid = objects.object_id(item)
        prior = newest.get(oid)
        if prior is None or _order(item) >= _order(prior):
            newest[oid] = item
    stale = objects.superseded(db, newest.values())
    return [o for o in newest.values() if objects.object_id(o) not in stale]


def _order(item: DataObject) -> str:
    return sequencer_order(item.sequencer) if item.sequencer else ""


def _insert(db: Database, run: Run, delivery_ids: list[str]) -> Prepared:
    """Write the run and link its deliveries in one transaction. If the same (repo, ref,
    commit, kinds) already has a run, the deliveries join that one instead."""
    run_id, inserted = runs.insert(db, run, delivery_ids)
    if not inserted or run.status != "queued":
        deliveries.finish(db, delivery_ids, run_id=run_id)
    return Prepared(run_id)


def _ready(
    settings: Settings, db: Database, run_id: int, events: list[Event], mirror_: Mirror | None = None
) -> Prepared:
    """Make sure a queued run has its worktree; return the stages still to publish."""
    with db.session() as s:
        run = runs.get(s, run_id)
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
            batch = batch_objects(db, events) if events[0].type == "data" else []
            _make_workspace(settings, db, mirror_ or mirror(settings, repo), repo, run_id, commit, batch)
        except (ConfigError, GitError, OSError, IntakeError, FetchError, BlobError) as exc:
            _fail(db, run_id, f"workspace: {exc}")
            return Prepared(run_id)
        runs.set_workspace(db, run_id, str(workspace(settings, run_id)))
    return Prepared(run_id, queued)


def _fail(db: Database, run_id: int, reason: str) -> None:
    with db.session() as s:
        run = runs.get(s, run_id)
        assert run is not None
        end_run(run, "failed", reason=reason)
        ids = [d.id for d in run.deliveries]
    deliveries.finish(db, ids, run_id=run_id)


def _make_workspace(
    settings: Settings,
    db: Database,
    mirror_: Mirror,
    repo: RepoConfig,
    run_id: int,
    commit: str,
    batch: list[DataObject],
) -> None:
    """A worktree at the exact commit, with the run's dataset version (a data run's objects
    landed as the newest one first) materialized into ``data.into``."""
    path = workspace(settings, run_id)
    if path.exists():
        mirror_.remove_worktree(path)
        shutil.rmtree(path, ignore_errors=True)
    mirror_.add_worktree(path, commit)
    number = ledger.version_for(settings, db, repo, run_id, batch)
    ledger.materialize(settings, db, repo.name, number, path / project_in(path).data_into)


def prepare_retry(settings: Settings, db: Database, run_id: int) -> Prepared:
    """A retry's worktree at its commit (with the first attempt's dropped data files), and the
    stages to publish; nothing when it was superseded or cancelled meanwhile."""
    with db.session() as s:
        run = runs.get(s, run_id)
        if run is None:
            return Prepared(None)
        first = runs.origin(s, run)
        events = [Event.from_dict(d.event) for d in deliveries.of_run(s, first.id)]
    return _ready(settings, db, run_id, events)
