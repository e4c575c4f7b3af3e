"""Who is asking, and whether their role allows it: named users (``loopline users add``) or the
bootstrap admin (``LOOPLINE_API_TOKEN``). Every blueprint with human actions asks here."""

from __future__ import annotations

import hmac

from flask import request

from service.errors import ApiError, Unauthorized
from service.state import loopline
from store import users


class Forbidden(ApiError):
    status, code = 403, "actions_disabled"


class NotAllowed(ApiError):
    status, code = 403, "forbidden"


def require(action: str) -> users.Actor:
    """Who sent the bearer token, if their role allows ``action`` (401 unknown, 403 not allowed).

    The bootstrap token acts as ``X-Loopline-User`` (default "api") with the admin role.
    """
    actor = authenticate()
    if not actor.may(action):
        raise NotAllowed(f"{actor.name} is a {actor.role}: {action} needs the {users.NEEDS[action]} role")
    return actor


def authenticate() -> users.Actor:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    bootstrap = loopline().settings.api_token
    if bootstrap and hmac.compare_digest(given.encode(), bootstrap.encode()):
        return users.Actor((request.headers.get("X-Loopline-User") or "api")[:100], "admin")
    with loopline().db.session() as s:
        actor = users.authenticate(s, given) if given else None
        if actor is None and not bootstrap and not users.any_user(s):
            raise Forbidden("human actions are disabled: set LOOPLINE_API_TOKEN or add users on the server")
    if actor is not None:
        return actor
    raise Unauthorized("missing or wrong API token", "bad_token")
