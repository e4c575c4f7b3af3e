"""Webhook dialects, one module per provider (the provider comes from the URL path).

Each module offers ``verify(headers, body, secret)`` on the raw bytes, ``delivery_id(headers,
body)`` and a pure ``parse(headers, body) -> Event``.
"""

from __future__ import annotations

from types import ModuleType

from service.dialects import git, github

DIALECTS: dict[str, ModuleType] = {"github": github, "git": git}
