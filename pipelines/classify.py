"""Sort changed files into kinds: training code, app code, data or ignore.

Rules are ordered globs (first match wins); an unmatched file is app code, because an
unknown change must still be tested rather than silently skipped. Every rule carries a
readable name saying where it came from, so a user can see why a file got its kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

#: Kinds that start work, in canonical order.
ACTIVE_KINDS = ("training_code", "app_code", "data")
#: Every kind a rule may give.
KINDS = ("ignore", "data", "training_code", "app_code")
UNMATCHED = "default: app_code"


class Change(NamedTuple):
    """One changed path as ``git diff --name-status`` reports it (a tuple: diffs run to 100,000s)."""

    path: str
    status: str  # A, M, D, R, C, T
    old_path: str | None = None


@dataclass(frozen=True)
class Rule:
    """``pattern`` (a path glob) gives ``kind``; ``name`` says where the rule comes from,
    e.g. ``classify.data[0]: data/**`` or ``dvc.yaml: stages.train.deps[0]: src/train.py``."""

    kind: str
    pattern: str
    name: str


class FileClass(NamedTuple):
    path: str
    status: str
    kind: str
    rule: str


@dataclass(frozen=True)
class Classification:
    files: tuple[FileClass, ...]
    kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "files": [f._asdict() for f in self.files],
            "kinds": list(self.kinds),
        }


def _glob_source(pattern: str) -> str:
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
    return "".join(out) + r"\Z"


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob to a regex: ``*`` and ``?`` stay within one path segment,
    ``**`` spans segments and ``**/`` may match nothing."""
    return re.compile(_glob_source(pattern), re.DOTALL)


@lru_cache(maxsize=64)
def _matcher(rules: tuple[Rule, ...]) -> re.Pattern[str]:
    """All rules as one alternation, in order: the regex engine tries the alternatives left to
    right, so the first group that matches is the first rule that matches (one scan per path)."""
    return re.compile("|".join(f"({_glob_source(r.pattern)})" for r in rules) or r"(?!)", re.DOTALL)


def match_rule(path: str, rules: tuple[Rule, ...]) -> Rule | None:
    found = _matcher(rules).match(path)
    return rules[found.lastindex - 1] if found and found.lastindex else None


def classify(changes: Iterable[Change], rules: tuple[Rule, ...]) -> Classification:
    """Classify every changed path; a rename counts under both its old and new path."""
    match = _matcher(rules).match
    files: list[FileClass] = []
    kinds: set[str] = set()
    for change in changes:
        for path in (change.old_path, change.path) if change.old_path else (change.path,):
            found = match(path)
            rule = rules[found.lastindex - 1] if found and found.lastindex else None
            kind, name = (rule.kind, rule.name) if rule else ("app_code", UNMATCHED)
            files.append(FileClass(path, change.status, kind, name))
            kinds.add(kind)
    return Classification(files=tuple(files), kinds=tuple(k for k in ACTIVE_KINDS if k in kinds))
