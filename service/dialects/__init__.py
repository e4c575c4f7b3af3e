"""Webhook dialects, one per Git host (the provider comes from the URL path, never the body).

Each offers ``verify(headers, body, secret)`` on the raw bytes, ``delivery_id(headers, body)``
and a pure ``parse(headers, body) -> list[Event]`` (see :class:`~service.dialects.base.Dialect`).
"""

from __future__ import annotations

from service.dialects import bitbucket, git, github, gitlab
from service.dialects.base import Dialect
from service.dialects.gitea import FORGEJO, GITEA

DIALECTS: dict[str, Dialect] = {
    "github": github,
    "gitlab": gitlab,
    "gitea": GITEA,
    "forgejo": FORGEJO,
    "bitbucket": bitbucket,
    "git": git,
}
