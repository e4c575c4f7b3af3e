"""Sort changed files into kinds: training code, app code, data or ignore.

Rules are ordered globs (first match wins); an unmatched file is app code, because an
unknown change must still be tested rather than silently skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

#: Kinds that start work, in canonical order.
ACTIVE_KINDS = ("training_code", "app_code", "data")


@dataclass(frozen=True)
class Change:
    """One changed path as ``git diff --name-status`` reports it."""

    path: str
    status: str  # A, M, D, R, C, T
    old_path: str | None = None


@dataclass(frozen=True)
class FileClass:
    path: str
    status: str
    kind: str
    rule: str


@dataclass(frozen=True)
class Classification:
    files: tuple[FileClass, ...]
    kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"files": [f.__dict__ for f in self.files], "kinds": list(self.kinds)}


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob to a regex: ``*`` and ``?`` stay within one path segment,
    ``**`` spans segments and ``**/`` may match nothing."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match_kind(path: str, rules: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    for kind, pattern in rules:
        if glob_regex(pattern).match(path):
            return kind, f"{kind}: {pattern}"
    return "app_code", "default: app_code"


def classify(
    changes: list[Change] | tuple[Change, ...], rules: tuple[tuple[str, str], ...]
) -> Classification:
    """Classify every changed path; a rename counts under both its old and new path."""
    files: list[FileClass] = []
    kinds: set[str] = set()
    for change in changes:
        for path in (change.old_path, change.path):
            if path is None:
                continue
            kind, rule = match_kind(path, rules)
            files.append(FileClass(path=path, status=change.status, kind=kind, rule=rule))
            kinds.add(kind)
    return Classification(files=tuple(files), kinds=tuple(k for k in ACTIVE_KINDS if k in kinds))
