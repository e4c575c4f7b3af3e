"""The periodic trigger check (``loopline.triggers`` on Celery beat): for each repository, read
``triggers:`` from its default branch and store a trigger delivery for each one that is due.

Each fire's delivery id names what it is about (a schedule's tick), and the store remembers what
each trigger last did, so a beat that restarts, or runs twice, neither skips nor repeats a fire.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from config.settings import Settings
from pipelines import drift as drifts
from pipelines.config import ConfigError, RepoConfig
from pipelines.project import (
    DriftLimits,
    DriftTrigger,
    PerformanceTrigger,
    ProjectConfig,
    ScheduleTrigger,
    VolumeTrigger,
)
from pipelines.triggers import cooled_down, new_rows, schedule_decision, underperforms, volume_due
from store import datasets, outcomes, registry, triggers
from store.clock import utcnow
from store.db import Database
from workers.gitops import GitError
from workers.notify import Notice, trigger_notice
from workers.projects import mirror, project_at

if TYPE_CHECKING:
    from store.models import Deployment

log = logging.getLogger(__name__)


def check(settings: Settings, db: Database, now: datetime | None = None) -> list[Notice]:
    """Fire every trigger that is due; returns what to announce about each fire."""
    now = now or utcnow()
    fired: list[Notice] = []
    for repo in settings.repositories:
        project = _project(settings, repo)
        if project is None:
            continue
        found = project.triggers
        drift = found.drift
        outcomes.set_rates(db, {project.model_name: drift.sample_rate if drift else 0.0})
        events = [
            found.schedule and check_schedule(db, repo, found.schedule, now),
            found.performance and check_performance(db, repo, project.model_name, found.performance, now),
            drift and check_drift(db, repo, project.model_name, drift, project.data_validate.drift, now),
            found.volume and check_volume(db, repo, project.model_name, found.volume, now),
        ]
        fired += [_notice(settings, db, event) for event in events if event]
    return fired


def _notice(settings: Settings, db: Database, event_id: str) -> Notice:
    found = triggers.fired(db, event_id)
    assert found is not None
    repository, trigger, reason = found
    return trigger_notice(settings, repository, trigger, reason, event_id)


def _project(settings: Settings, repo: RepoConfig) -> ProjectConfig | None:
    """``loopline.yml`` as the default branch has it now (None before the first fetch)."""
    mirror_ = mirror(settings, repo)
    try:
        head = (
            mirror_.resolve(f"refs/heads/{repo.default_branch}") if (mirror_.path / "HEAD").exists() else None
        )
        return project_at(settings, repo, head) if head else None
    except (ConfigError, GitError) as exc:
        log.warning("triggers: cannot read %s's loopline.yml: %s", repo.name, exc)
        return None


def _serving(db: Database, model: str) -> Deployment | None:
    with db.session() as s:
        return registry.current_deployment(s, model)


def _quiet(db: Database, repo: str, trigger: str, cooldown: float | None, now: datetime) -> str | None:
    """Why ``trigger`` must not fire now: its run is still under way, or it fired within ``cooldown``."""
    busy = triggers.active(db, repo, trigger)
    if busy is not None:
        return f"{busy} is under way"
    last = triggers.last_fired(db, repo, trigger)
    if not cooled_down(last, timedelta(seconds=cooldown or 0), now):
        return f"cooling down since {last:%Y-%m-%d %H:%M} UTC"
    return None


def _fire(db: Database, repo: RepoConfig, trigger: str, reason: str, key: str, now: datetime) -> str:
    """Store the trigger's delivery, then remember the fire (a crash between repeats the same key:
    a duplicate, not a second run)."""
    recorded = triggers.request_run(
        db,
        repository=repo.name,
        trigger=trigger,
        ref=f"refs/heads/{repo.default_branch}",
        reason=reason,
        key=key,
    )
    triggers.remember(db, repo.name, trigger, fired_at=now, event_id=recorded.event_id, reason=reason)
    log.info("triggers: %s: %s (event %s)", repo.name, reason, recorded.event_id)
    return recorded.event_id


def check_performance(
    db: Database, repo: RepoConfig, model: str, performance: PerformanceTrigger, now: datetime
) -> str | None:
    """Retrain when the serving release's online accuracy over the window falls below the minimum."""
    serving = _serving(db, model)
    if serving is None:
        return None
    correct, labelled = outcomes.window_accuracy(db, serving.id, performance.window)
    reason = underperforms(performance, serving.version, correct, labelled)
    if reason is None or _quiet(db, repo.name, "performance", performance.cooldown, now):
        return None
    return _fire(db, repo, "performance", reason, f"{serving.id}:{now.isoformat()}", now)


def check_schedule(db: Database, repo: RepoConfig, schedule: ScheduleTrigger, now: datetime) -> str | None:
    """Store a run for the newest tick not yet handled (one for many missed ones), unless the
    previous scheduled run is still active; returns the event id of a fire."""
    busy = triggers.active(db, repo.name, "schedule")
    decision = schedule_decision(schedule, now, triggers.last_tick(db, repo.name, "schedule"), active=busy)
    if decision.action == "wait":
        return None
    assert decision.tick is not None
    if decision.action != "fire":  # armed at first sight, or a tick skipped while a run is active
        log.info("triggers: %s: %s", repo.name, decision.reason)
        triggers.remember(db, repo.name, "schedule", tick=decision.tick, reason=decision.reason)
        return None
    # the tick is the delivery's key: the same tick again is a duplicate, not a second run
    event = _fire(db, repo, "schedule", decision.reason, decision.tick.isoformat(), now)
    triggers.remember(db, repo.name, "schedule", tick=decision.tick, reason=decision.reason)
    return event


def check_drift(
    db: Database, repo: RepoConfig, model: str, drift: DriftTrigger, limits: DriftLimits, now: datetime
) -> str | None:
    """Retrain when the serving release's newest sampled inputs (or the labels it predicted for
    them) drifted from its training data; then quiet for the cooldown: one episode, one run.
    What each check saw is kept as the trigger's state (``trigger_state.reason``)."""
    serving = registry.serving(db, model)
    if serving is None or not serving.profile:
        return None
    instances, labels, newest = outcomes.window(db, serving.release, drift.window)
    found = drifts.check(drift, limits, serving.profile, drifts.Window(instances, labels), serving.version)
    quiet = found.reason and _quiet(db, repo.name, "drift", drift.cooldown, now)
    if found.reason is None or quiet:
        note = f"{found.reason} (not fired: {quiet})" if quiet else found.note
        triggers.remember(db, repo.name, "drift", reason=note)
        return None
    # one delivery per (release, newest sample): two checkers that saw the same window fire once
    return _fire(db, repo, "drift", found.reason, f"{serving.release}:{newest}", now)


def check_volume(
    db: Database, repo: RepoConfig, model: str, volume: VolumeTrigger, now: datetime
) -> str | None:
    """Retrain once at least ``min_new_rows`` rows landed since the serving model's dataset
    version (landings below it start no run: intake only records them), on the newest version."""
    serving = registry.serving(db, model)
    if serving is None:
        return None
    current = datasets.current_number(db, repo.name)
    if current <= serving.dataset_version or triggers.active(db, repo.name, "volume"):
        return None
    before, _ = datasets.manifest(db, repo.name, serving.dataset_version)
    after, _ = datasets.manifest(db, repo.name, current)
    rows = new_rows(before, after)
    reason = volume_due(volume, rows, serving.version, serving.dataset_version, current)
    if reason is None:
        note = f"{rows:,} of {volume.min_new_rows:,} new rows since v{serving.version}'s dataset"
        triggers.remember(db, repo.name, "volume", reason=note)
        return None
    # the dataset version is the key: it fires once, however often it is checked
    return _fire(db, repo, "volume", reason, f"{repo.name}:v{current}", now)
