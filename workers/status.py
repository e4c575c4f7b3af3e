"""Commit statuses: each run's state, shown on its commit at the Git host.

GitHub, GitLab, Gitea/Forgejo and Bitbucket each have their own path, token header, field
names and states; :func:`build` is the one place that knows them. The relay notices a run whose
status changed and a worker task calls :func:`report` (never the web process). A host that
fails or refuses is logged and never fails the run. The token is read from the environment
variable ``status.token_env`` names, only here, and never reaches a log, a task or the API.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from config.settings import Settings
from pipelines.config import StatusConfig
from store.db import Database
from store.models import Run
from workers.locks import file_lock, lock_path

log = logging.getLogger(__name__)
#: Connect and read timeouts (together at most 5 s), attempts, and the first backoff.
TIMEOUT = (2.0, 3.0)
ATTEMPTS = 3
BACKOFF = 0.5
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

_GITHUB = {
    "queued": "pending",
    "running": "pending",
    "awaiting_approval": "pending",
    "succeeded": "success",
    "skipped": "success",
    "failed": "failure",
    "gate_failed": "failure",
    "cancelled": "error",
}
#: Each host's state for each run status. GitLab refuses going back from running to pending,
#: so a run waiting for approval stays "running" there.
STATES: dict[str, dict[str, str]] = {
    "github": _GITHUB,
    "gitea": _GITHUB,
    "forgejo": _GITHUB,
    "gitlab": {
        "queued": "pending",
        "running": "running",
        "awaiting_approval": "running",
        "succeeded": "success",
        "skipped": "success",
        "failed": "failed",
        "gate_failed": "failed",
        "cancelled": "canceled",
    },
    "bitbucket": {
        "queued": "INPROGRESS",
        "running": "INPROGRESS",
        "awaiting_approval": "INPROGRESS",
        "succeeded": "SUCCESSFUL",
        "skipped": "SUCCESSFUL",
        "failed": "FAILED",
        "gate_failed": "FAILED",
        "cancelled": "STOPPED",
    },
}


@dataclass(frozen=True)
class RunState:
    """What a status says about a run (read from the store in one go)."""

    id: int
    status: str
    commit: str
    ref: str | None
    reason: str | None


@dataclass(frozen=True)
class StatusRequest:
    """One POST to the host, without its token (so it can be logged)."""

    url: str
    body: dict[str, Any]


def description(run: RunState) -> str:
    words = {"awaiting_approval": "is waiting for approval", "gate_failed": "failed its evaluation gate"}
    text = f"Loopline run #{run.id} {words.get(run.status, run.status)}"
    if run.reason and run.status in ("cancelled", "failed", "skipped"):
        text += f": {run.reason}"
    return text if len(text) <= 140 else text[:139] + "…"


def _path(value: str) -> str:
    return "/".join(quote(part, safe="") for part in value.split("/"))


def build(config: StatusConfig, run: RunState, public_url: str) -> StatusRequest:
    """The host's documented request for this run's current state."""
    state = STATES[config.provider][run.status]
    link = f"{public_url}/#run={run.id}"
    text = description(run)
    branch = run.ref.removeprefix("refs/heads/") if run.ref and run.ref.startswith("refs/heads/") else None
    if config.provider == "gitlab":
        body = {"state": state, "name": config.context, "target_url": link, "description": text}
        if branch:
            body["ref"] = branch
        project = quote(config.repository, safe="")
        return StatusRequest(f"{config.api_url}/projects/{project}/statuses/{run.commit}", body)
    if config.provider == "bitbucket":
        body = {"key": config.context, "state": state, "url": link, "name": f"Loopline run #{run.id}"}
        body["description"] = text
        if branch:
            body["refname"] = branch
        url = f"{config.api_url}/repositories/{_path(config.repository)}/commit/{run.commit}/statuses/build"
        return StatusRequest(url, body)
    body = {"state": state, "target_url": link, "description": text, "context": config.context}
    return StatusRequest(f"{config.api_url}/repos/{_path(config.repository)}/statuses/{run.commit}", body)


def auth_headers(provider: str, token: str) -> dict[str, str]:
    if provider == "gitlab":
        return {"PRIVATE-TOKEN": token}
    if provider in ("gitea", "forgejo"):
        return {"Authorization": f"token {token}"}
    if provider == "github":
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    return {"Authorization": f"Bearer {token}"}


def send(provider: str, request: StatusRequest, token: str) -> bool:
    """POST with bounded timeouts; retry a few times on 5xx and connection errors, never on 4xx."""
    headers = {"Content-Type": "application/json", "User-Agent": "loopline", **auth_headers(provider, token)}
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            answer = requests.post(request.url, json=request.body, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            log.warning(
                "status: %s: %s (attempt %d/%d)", request.url, type(exc).__name__, attempt + 1, ATTEMPTS
            )
            continue
        if answer.status_code < 300:
            return True
        if answer.status_code < 500:
            log.warning(
                "status: %s refused %s: %s",
                request.url,
                answer.status_code,
                answer.text[:200].replace("\n", " "),
            )
            return False
        log.warning(
            "status: %s answered %s (attempt %d/%d)", request.url, answer.status_code, attempt + 1, ATTEMPTS
        )
    return False


def report(settings: Settings, db: Database, run_id: int) -> bool:
    """Send the run's current state to its Git host; True if the host took it. Never raises:
    a status is information about a run, never a reason for it to fail."""
    try:
        # One report per run at a time, each sending the state as it is then: the host sees
        # the states in order even when two tasks for one run overlap.
        with file_lock(lock_path(settings.home, f"status-{run_id}")):
            with db.session() as s:
                row = s.get(Run, run_id)
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
