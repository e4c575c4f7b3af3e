"""The periodic trigger check (``loopline.triggers`` on Celery beat): for each repository, read
``triggers:`` from its default branch and store a trigger delivery for each one that is due.

Each fire's delivery id names what it is about (a schedule's tick), and the store remembers what
each trigger last did, so a beat that restarts, or runs twice, neither skips nor repeats a fire.
"""

from __future__ import annotations

import logging
from datetime import datetime

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig
from pipelines.project import ProjectConfig
from pipelines.triggers import Schedule, schedule_decision
from store import triggers
from store.db import Database
from store.models import utcnow
from workers.gitops import GitError
from workers.projects import mirror, project_at

log = logging.getLogger(__name__)


def check(settings: Settings, db: Database, now: datetime | None = None) -> list[str]:
    """Fire every trigger that is due; returns the event ids stored."""
    now = now or utcnow()
    fired: list[str] = []
    for repo in settings.repositories:
        project = _project(settings, repo)
        if project is None:
            continue
        schedule = project.triggers.schedule
        if schedule is not None and (event := check_schedule(db, repo, schedule, now)):
            fired.append(event)
    return fired


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


def check_schedule(db: Database, repo: RepoConfig, schedule: Schedule, now: datetime) -> str | None:
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
    # The delivery first: a crash before the state is written fires the same tick again, and its
    # delivery id (the tick) makes that a duplicate, not a second run.
    recorded = triggers.request_run(
        db,
        repository=repo.name,
        trigger="schedule",
        ref=f"refs/heads/{repo.default_branch}",
        reason=decision.reason,
        key=decision.tick.isoformat(),
    )
    triggers.remember(
        db,
        repo.name,
        "schedule",
        tick=decision.tick,
        fired_at=now,
        event_id=recorded.event_id,
        reason=decision.reason,
    )
    log.info("triggers: %s: %s (event %s)", repo.name, decision.reason, recorded.event_id)
    return recorded.event_id
