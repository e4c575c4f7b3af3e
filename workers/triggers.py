"""The periodic trigger check (``loopline.triggers`` on Celery beat): for each repository, read
``triggers:`` from its default branch and store a trigger delivery for each one that is due.

Each fire's delivery id names what it is about (a schedule's tick), and the store remembers what
each trigger last did, so a beat that restarts, or runs twice, neither skips nor repeats a fire.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig
from pipelines.project import PerformanceTrigger, ProjectConfig, ScheduleTrigger
from pipelines.triggers import cooled_down, schedule_decision, underperforms
from store import outcomes, registry, triggers
from store.db import Database
from store.models import Deployment, utcnow
from workers.gitops import GitError
from workers.notify import Notice, trigger_notice
from workers.projects import mirror, project_at

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
