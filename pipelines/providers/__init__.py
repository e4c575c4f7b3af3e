"""Git providers, one module per host: its webhooks' dialect and its commit-status API.

Each offers ``verify(headers, body, secret)`` on the raw bytes, ``delivery_id(headers, body)``,
a pure ``parse(headers, body) -> list[Event]`` and ``status`` (see
:class:`~pipelines.providers.base.Provider`). :data:`PROVIDERS` is the one list of hosts: the
server config accepts these names, ``/hooks/<provider>`` routes by them, statuses report through
them. Adding a host is a module here plus its entry below.
"""

from __future__ import annotations

from pipelines.providers import bitbucket, git, github, gitlab
from pipelines.providers.base import Provider
from pipelines.providers.gitea import FORGEJO, GITEA

PROVIDERS: dict[str, Provider] = {
    "github": github,
    "gitlab": gitlab,
    "gitea": GITEA,
    "forgejo": FORGEJO,
    "bitbucket": bitbucket,
    "git": git,
}
