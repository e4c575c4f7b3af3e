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


_SUFFIX_RULE = re.compile(r"(?:\*\*/)?\*(\.[^*?/]+)")


def _first_segment(pattern: str) -> str | None:
    """The literal first path segment every match starts with (None: it has a wildcard)."""
    segment = pattern.partition("/")[0]
    return None if "*" in segment or "?" in segment else segment


def _extension(pattern: str) -> str | None:
    """For ``**/*.ext`` and ``*.ext``: the last extension every match ends with."""
    found = _SUFFIX_RULE.fullmatch(pattern)
    return "." + found.group(1).rsplit(".", 1)[1] if found else None


class _Matcher:
    """First-match-wins over ordered rules, fast for 100,000s of paths.

    A path is only tried against the rules that could match it: those whose literal first
    segment is the path's (or that start with a wildcard), and of the ``*.ext`` rules only
    those for the path's extension. Each such subset is one regex alternation, in rule order:
    the engine tries alternatives left to right, so the first group that matches is the first
    rule that matches. Subsets are compiled once per (first segment, extension) that rules name.
    """

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.keys = [(_first_segment(r.pattern), _extension(r.pattern)) for r in rules]
        self.segments = {seg for seg, _ in self.keys if seg is not None}
        self.extensions = {ext for _, ext in self.keys if ext is not None}
        self.subsets: dict[tuple[str | None, str | None], tuple[re.Pattern[str], tuple[Rule, ...]]] = {}

    def _subset(self, key: tuple[str | None, str | None]) -> tuple[re.Pattern[str], tuple[Rule, ...]]:
        chosen = tuple(
            rule
            for rule, (seg, ext) in zip(self.rules, self.keys, strict=True)
            if seg in (None, key[0]) and ext in (None, key[1])
        )
        source = "|".join(f"({_glob_source(r.pattern)})" for r in chosen) or r"(?!)"
        self.subsets[key] = subset = (re.compile(source, re.DOTALL), chosen)
        return subset

    def match(self, path: str) -> Rule | None:
        slash = path.find("/")
        segment = path[:slash] if slash >= 0 else path
        dot = path.rfind(".")
        ext = path[dot:] if dot > path.rfind("/") else None
        key = (
            segment if segment in self.segments else None,
            ext if ext in self.extensions else None,
        )
        regex, chosen = self.subsets.get(key) or self._subset(key)
        found = regex.match(path)
        return chosen[found.lastindex - 1] if found and found.lastindex else None


@lru_cache(maxsize=64)
def _matcher(rules: tuple[Rule, ...]) -> _Matcher:
    return _Matcher(rules)


def classify(changes: Iterable[Change], rules: tuple[Rule, ...]) -> Classification:
    """Classify every changed path; a rename counts under both its old and new path."""
    match = _matcher(rules).match
    files: list[FileClass] = []
    kinds: set[str] = set()
    for change in changes:
        for path in (change.old_path, change.path) if change.old_path else (change.path,):
            rule = match(path)
            kind, name = (rule.kind, rule.name) if rule else ("app_code", UNMATCHED)
            files.append(FileClass(path, change.status, kind, name))
            kinds.add(kind)
    return Classification(files=tuple(files), kinds=tuple(k for k in ACTIVE_KINDS if k in kinds))
