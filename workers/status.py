"""Commit statuses: each run's state, shown on its commit at the Git host.

GitHub, GitLab, Gitea/Forgejo and Bitbucket each have their own path, token header, field
names and states; each provider's module (``pipelines/providers/<host>.py``) knows its own.
The relay notices a run whose status changed and a worker task calls :func:`report` (never the
web process). A host that fails or refuses is logged and never fails the run. The token is read
from the environment variable ``status.token_env`` names, only here, and never reaches a log, a
task or the API.
"""

from __future__ import annotations

import logging
import os
import re

import requests

from config.settings import Settings
from pipelines.config import StatusConfig
from pipelines.providers import PROVIDERS
from pipelines.providers.base import RunState, StatusRequest
from pipelines.retry import retrying
from store import locks, runs
from store.db import Database

log = logging.getLogger(__name__)
#: Connect and read timeouts (together at most 5 s), attempts, and the first backoff (about).
TIMEOUT = (2.0, 3.0)
ATTEMPTS = 3
BACKOFF = 0.5
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def build(config: StatusConfig, run: RunState, public_url: str) -> StatusRequest:
    """The host's documented request for this run's current state."""
    api = PROVIDERS[config.provider].status
    assert api is not None  # the config accepts status only for hosts with a status API
    return api.request(config, run, api.states[run.status], f"{public_url}/#run={run.id}")


class _Unavailable(Exception):
    """The host answered 5xx: worth another attempt."""


def send(provider: str, request: StatusRequest, token: str) -> bool:
    """POST with bounded timeouts; retry a few times on 5xx and connection errors, never on 4xx."""
    api = PROVIDERS[provider].status
    assert api is not None
    headers = {"Content-Type": "application/json", "User-Agent": "loopline", **api.auth(token)}
    try:
        for attempt in retrying(
            (requests.RequestException, _Unavailable), attempts=ATTEMPTS, first_wait=BACKOFF
        ):
            with attempt:
                tried = f"attempt {attempt.retry_state.attempt_number}/{ATTEMPTS}"
                try:
                    answer = requests.post(request.url, json=request.body, headers=headers, timeout=TIMEOUT)
                except requests.RequestException as exc:
                    log.warning("status: %s: %s (%s)", request.url, type(exc).__name__, tried)
                    raise
                if answer.status_code >= 500:
                    log.warning("status: %s answered %s (%s)", request.url, answer.status_code, tried)
                    raise _Unavailable
    except (requests.RequestException, _Unavailable):
        return False
    if answer.status_code < 300:
        return True
    text = answer.text[:200].replace("\n", " ")
    log.warning("status: %s refused %s: %s", request.url, answer.status_code, text)
    return False


def report(settings: Settings, db: Database, run_id: int) -> bool:
    """Send the run's current state to its Git host; True if the host took it. Never raises:
    a status is information about a run, never a reason for it to fail."""
    try:
        # One report per run at a time, each sending the state as it is then: the host sees
        # the states in order even when two tasks for one run overlap, on any hosts.
        with locks.held(db, f"status-{run_id}"):
            with db.session() as s:
                row = runs.get(s, run_id)
                if row is None:
                    return False
                run = RunState(row.id, row.status, row.commit or "", row.ref, row.reason)
                repo = settings.repo(row.repository)
            if repo is None or repo.status is None or not _SHA.match(run.commit):
                return False
            token = os.environ.get(repo.status.token_env)
            if not token:
                log.error("status: %s is not set; run %s is not reported", repo.status.token_env, run_id)
                return False
            request = build(repo.status, run, settings.public_url)
            sent = send(repo.status.provider, request, token)
            log.info("status: run %s %s → %s: %s", run_id, run.status, request.body.get("state"), sent)
            return sent
    except Exception:  # a status must never fail the run, whatever went wrong
        log.exception("status: reporting run %s failed", run_id)
        return False
