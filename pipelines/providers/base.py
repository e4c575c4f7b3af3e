"""What every Git provider shares: the interface (its webhooks' dialect and, if the host has one,
its commit-status API), strict JSON, headers, signatures on the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from pipelines.events import Event, PayloadError

if TYPE_CHECKING:  # the config validates provider names against this package: no import at run time
    from pipelines.config import StatusConfig

_DELIVERY_RE = re.compile(r"[\x21-\x7e]{1,128}\Z")


class Headers(Protocol):
    """Request headers: Werkzeug's (case-insensitive) in the app, a plain dict in tests."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class RunState:
    """What a commit status says about a run (read from the store in one go)."""

    id: int
    status: str
    commit: str
    ref: str | None
    reason: str | None

    @property
    def branch(self) -> str | None:
        return (
            self.ref.removeprefix("refs/heads/") if self.ref and self.ref.startswith("refs/heads/") else None
        )

    def description(self) -> str:
        words = {"awaiting_approval": "is waiting for approval", "gate_failed": "failed its evaluation gate"}
        text = f"Loopline run #{self.id} {words.get(self.status, self.status)}"
        if self.reason and self.status in ("cancelled", "failed", "skipped"):
            text += f": {self.reason}"
        return text if len(text) <= 140 else text[:139] + "…"


@dataclass(frozen=True)
class StatusRequest:
    """One POST to the host, without its token (so it can be logged)."""

    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class StatusApi:
    """A host's commit-status API. ``request(config, run, state, link)`` builds the documented
    request for the host's ``state`` of the run; ``auth(token)`` its token headers."""

    #: Where the API lives when ``status.api_url`` is not given; None: self-hosted, give it.
    default_url: str | None
    #: The host's state for each run status.
    states: Mapping[str, str]
    request: Callable[[StatusConfig, RunState, str, str], StatusRequest]
    auth: Callable[[str], dict[str, str]]


def url_path(value: str) -> str:
    """``owner/repo`` with each part quoted for a URL path."""
    return "/".join(quote(part, safe="") for part in value.split("/"))


class Provider(Protocol):
    """One Git host: a module (or object) in :data:`pipelines.providers.PROVIDERS`.

    Its webhooks' dialect (``verify``, ``delivery_id``, ``parse``; the provider comes from the
    URL path, never from the body) and its commit-status API (``status``, None without one).
    """

    @property
    def status(self) -> StatusApi | None: ...

    def verify(self, headers: Headers, body: bytes, secret: bytes) -> bool:
        """True if the request is signed (or carries the token) for ``secret``; never raises."""
        ...

    def delivery_id(self, headers: Headers, body: bytes) -> str:
        """The sender's id for this delivery, stable across its retries."""
        ...

    def parse(self, headers: Headers, body: bytes) -> list[Event]:
        """The ref updates the delivery reports, in order (several only for Bitbucket).

        Raises :class:`~pipelines.events.PayloadError` or :class:`~pipelines.events.Ignored`
        and nothing else, whatever the bytes.
        """
        ...


def load_json(body: bytes) -> dict[str, Any]:
    """Decode a JSON object strictly: UTF-8, bounded nesting, an object at the top."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not UTF-8") from exc
    try:
        data = json.loads(text)
    except RecursionError as exc:  # hostile nesting: answer 400, fast, not a crash
        raise PayloadError("JSON nested too deeply") from exc
    except ValueError as exc:  # also integers beyond CPython's digit limit
        raise PayloadError(f"body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object")
    return data


def header(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def require_header(headers: Headers, name: str) -> str:
    value = header(headers, name)
    if value is None:
        raise PayloadError(f"missing header {name}")
    return value


def delivery_header(headers: Headers, *names: str) -> str:
    """The first of ``names`` present: printable ASCII, at most 128 characters."""
    for name in names:
        value = header(headers, name)
        if value is None:
            continue
        if not _DELIVERY_RE.match(value):
            raise PayloadError(f"header {name} must be 1-128 printable ASCII characters")
        return value
    raise PayloadError(f"missing header {' or '.join(names)}")


def hmac_sha256_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_matches(signature: str | None, secret: bytes, body: bytes, prefix: str = "sha256=") -> bool:
    """True if ``signature`` is ``prefix`` + the hex HMAC-SHA256 of ``body`` (constant time)."""
    if not signature or not signature.startswith(prefix):
        return False
    expected = prefix + hmac_sha256_hex(secret, body)
    return hmac.compare_digest(signature.encode(), expected.encode())


def token_matches(token: str | None, secret: bytes) -> bool:
    """True if a shared token sent in a header equals ``secret`` (constant time)."""
    return token is not None and hmac.compare_digest(token.encode(), secret)


def full_name(repo: object) -> str:
    """``owner/name`` of a GitHub-shaped repository object (GitHub, Gitea, Forgejo)."""
    if not isinstance(repo, dict):
        raise PayloadError("repository must be an object")
    full = repo.get("full_name")
    if isinstance(full, str) and full:
        return full
    owner = repo.get("owner")
    if not isinstance(owner, dict):
        owner = {}
    login = owner.get("login") or owner.get("name")
    name = repo.get("name")
    if isinstance(login, str) and login and isinstance(name, str) and name:
        return f"{login}/{name}"  # payloads from before full_name existed
    raise PayloadError("repository.full_name is missing")


def commit_message(commits: object, sha: object) -> str | None:
    """The message of commit ``sha`` in a payload's commit list, if listed there (GitLab and
    Gitea list at most 20 commits; the worker reads a missing message from git)."""
    if not isinstance(commits, list):
        return None
    for commit in commits:
        if isinstance(commit, dict) and commit.get("id") == sha:
            message = commit.get("message")
            return message if isinstance(message, str) else None
    return None
