"""Notifications: a generic JSON webhook (or a Slack-compatible one) when a run needs approval,
fails, is gated, or a trigger fires.

A periodic sweep (``loopline.notify_sweep``) claims each (run, status) once in the store and
sends it from a worker task; the web process never calls out. The target's URL is read from
the environment variable the server configuration names (Slack's URL *is* its secret), so it
never reaches a log, a task's arguments or a body; a body holds no token either.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from config.settings import Settings
from pipelines.config import NotifyTarget
from store import notices
from store.clock import utcnow
from store.db import Database

log = logging.getLogger(__name__)
#: Run statuses worth telling somebody about.
NOTIFIED = ("awaiting_approval", "failed", "gate_failed")
#: Runs older than this are not announced (e.g. when a target is added to a busy server).
WINDOW = timedelta(hours=6)
TIMEOUT = (2.0, 5.0)
_WORDS = {
    "awaiting_approval": "needs approval",
    "failed": "failed",
    "gate_failed": "was stopped by its evaluation gate",
}


@dataclass(frozen=True)
class Notice:  # a plain dataclass: it travels as a task's argument (asdict), holding no secret
    """One thing to announce: ``run.<status>`` or ``trigger.fired``."""

    event: str
    repository: str
    text: str
    detail: dict[str, Any]

    def body(self, form: str) -> dict[str, Any]:
        if form == "slack":  # Slack's (and Mattermost's, Discord's /slack) incoming webhooks
            return {"text": self.text}
        return {"event": self.event, "repository": self.repository, "text": self.text, **self.detail}


def run_notice(settings: Settings, run: dict[str, Any]) -> Notice:
    """What to say about a run (``store.views.run_dict`` shape) in its current status."""
    link = f"{settings.public_url}/#run={run['id']}"
    branch = (run.get("ref") or "").removeprefix("refs/heads/")
    text = (
        f"Loopline: {run['repository']} run #{run['id']} ({run['trigger']}, {branch}) {_WORDS[run['status']]}"
    )
    if run.get("reason") and run["status"] != "awaiting_approval":
        text += f": {run['reason']}"
    keys = ("id", "status", "trigger", "reason", "ref", "commit", "model_version")
    detail = {"run": {k: run.get(k) for k in keys} | {"url": link}}
    return Notice(f"run.{run['status']}", run["repository"], f"{text} <{link}>", detail)


def trigger_notice(settings: Settings, repository: str, trigger: str, reason: str, event_id: str) -> Notice:
    link = f"{settings.public_url}/api/events/{event_id}"
    text = f"Loopline: {repository}: {trigger} trigger fired: {reason} <{link}>"
    detail = {"trigger": trigger, "reason": reason, "event_id": event_id, "url": link}
    return Notice("trigger.fired", repository, text, detail)


#: Which ``on:`` entry a notice's event answers to.
_KIND = {
    "run.awaiting_approval": "approval",
    "run.failed": "failed",
    "run.gate_failed": "gate_failed",
    "trigger.fired": "trigger",
}


def targets(settings: Settings, repository: str) -> tuple[NotifyTarget, ...]:
    """The repository's own targets, then the server's (``LOOPLINE_NOTIFY_URL``)."""
    repo = settings.repo(repository)
    own = repo.notify if repo else ()
    if settings.notify_url:
        return (*own, NotifyTarget(url_env="LOOPLINE_NOTIFY_URL", format=settings.notify_format))
    return own


def wanted(settings: Settings, notice: Notice) -> list[NotifyTarget]:
    return [t for t in targets(settings, notice.repository) if _KIND[notice.event] in t.on]


def _session(attempts: int, backoff: float) -> requests.Session:
    """urllib3 retries connection errors, 429 and 5xx with exponential backoff (honouring
    ``Retry-After``); a 4xx is the receiver refusing, which a retry cannot fix."""
    retry = Retry(
        total=attempts - 1,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


class NotifyFailed(RuntimeError):
    """The receiver did not take the notice after the quick retries (the task retries later)."""


def send(target: NotifyTarget, notice: Notice, *, attempts: int = 4, backoff: float = 0.5) -> None:
    url = os.environ.get(target.url_env)
    if not url:
        log.error(
            "notify: %s is not set; %s for %s not sent", target.url_env, notice.event, notice.repository
        )
        return
    with _session(attempts, backoff) as session:
        try:
            answer = session.post(
                url, json=notice.body(target.format), timeout=TIMEOUT, headers={"User-Agent": "loopline"}
            )
        except requests.RequestException as exc:  # the URL stays out of the message: it is a secret
            raise NotifyFailed(f"{target.url_env}: {type(exc).__name__}") from None
    if answer.status_code >= 500 or answer.status_code == 429:
        raise NotifyFailed(f"{target.url_env}: answered {answer.status_code}")
    if answer.status_code >= 300:
        log.warning("notify: %s refused %s: %s", target.url_env, notice.event, answer.status_code)


def due(settings: Settings, db: Database) -> list[Notice]:
    """Claim every run whose status is worth a notice and was not announced yet."""
    repositories = [r.name for r in settings.repositories if targets(settings, r.name)]
    claimed = notices.take(db, repositories, NOTIFIED, since=utcnow() - WINDOW)
    return [run_notice(settings, run) for run in claimed]
