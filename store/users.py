"""Named users with a role and a personal API token, so every human action records a person.

Only the token's SHA-256 is stored: the token is 32 random bytes, so a plain digest cannot be
reversed or guessed (a slow password hash buys nothing for a secret nobody chose), and a login
is one indexed lookup. ``LOOPLINE_API_TOKEN`` stays valid as the bootstrap admin.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.errors import LooplineError
from store.db import Database
from store.models import User, utcnow
from store.views import iso

#: Each role may do what the ones before it may, and more.
ROLES = ("viewer", "approver", "admin")
#: What each human action needs: approvers decide on runs, admins also move releases and users.
NEEDS = {
    "approve": "approver",
    "reject": "approver",
    "retry": "approver",
    "cancel": "approver",
    "run": "approver",  # a manual run (POST /api/repos/<name>/runs, service/triggers.py)
    "reproduce": "approver",  # a rebuild on the trainer (service/reproductions.py)
    "promote": "admin",
    "rollback": "admin",
    "users": "admin",
}
TOKEN_PREFIX = "llu_"  # noqa: S105 (a prefix that marks user tokens, not a secret)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserError(LooplineError, ValueError):
    """A bad name or role, a name taken, or an unknown user."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: a named user, or the bootstrap admin (``LOOPLINE_API_TOKEN``)."""

    name: str
    role: str

    def may(self, action: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(NEEDS[action])


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(db: Database, name: str, role: str) -> str:
    """Create a user; returns the token, which is shown once and never stored."""
    if not _NAME.match(name):
        raise UserError(f"bad user name {name[:64]!r}: letters, digits, '.', '_', '@', '-' (at most 64)")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with db.session() as s:
            s.add(User(name=name, role=role, token_sha256=digest(token)))
    except IntegrityError as exc:
        raise UserError(f"a user named {name!r} exists already") from exc
    return token


def remove(db: Database, name: str) -> None:
    with db.session() as s:
        user = s.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            raise UserError(f"no user named {name[:64]!r}")
        s.delete(user)


def listing(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        return [
            {
                "name": u.name,
                "role": u.role,
                "created_at": iso(u.created_at),
                "last_seen_at": iso(u.last_seen_at),
            }
            for u in s.scalars(select(User).order_by(User.name))
        ]


def any_user(session: Session) -> bool:
    """Whether anyone was added: without users or a bootstrap token, human actions are off."""
    return session.scalar(select(User.id).limit(1)) is not None


def authenticate(session: Session, token: str) -> Actor | None:
    """The user whose token this is (noting when it was last used), or ``None``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    user = session.scalars(select(User).where(User.token_sha256 == digest(token))).one_or_none()
    if user is None:
        return None
    user.last_seen_at = utcnow()
    return Actor(user.name, user.role)
