"""Dataset manifests as data: apply a landing to a manifest, hash one, compare two.

A manifest is a list of entries ``{"path", "sha256", "size", "rows", "source", "landed_at",
"delivery_id"}`` sorted by ``path`` (relative to the project's ``data.into``). Its identity is
its paths and contents only: :func:`manifest_sha256` hashes ``(path, sha256)`` pairs, so the same
files landing again from elsewhere give the same hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Entry = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """What one landing did to a manifest."""

    manifest: list[Entry]
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


def apply(manifest: Iterable[Entry], landed: Iterable[Entry], removed: Iterable[str]) -> Change:
    """The previous manifest, then ``removed`` paths taken out, then ``landed`` entries in (an
    entry for a path already there replaces it; the same bytes at the same path change nothing)."""
    files = {e["path"]: e for e in manifest}
    gone = [p for p in dict.fromkeys(removed) if p in files]
    for path in gone:
        del files[path]
    added: list[str] = []
    replaced: list[str] = []
    for entry in landed:
        prior = files.get(entry["path"])
        if prior is not None and prior["sha256"] == entry["sha256"]:
            continue
        (added if prior is None else replaced).append(entry["path"])
        files[entry["path"]] = entry
    # a path removed and landed again in one batch is a replacement, not a removal
    back = [p for p in gone if p in files]
    return Change(
        manifest=[files[p] for p in sorted(files)],
        added=[p for p in added if p not in back],
        replaced=replaced + [p for p in back if p in added],
        removed=[p for p in gone if p not in files],
    )


def manifest_sha256(manifest: Iterable[Entry]) -> str:
    pairs = sorted((e["path"], e["sha256"]) for e in manifest)
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def diff(old: Iterable[Entry], new: Iterable[Entry]) -> dict[str, Any]:
    """Files added, removed and replaced from ``old`` to ``new``, with the rows each side has."""
    before = {e["path"]: e for e in old}
    after = {e["path"]: e for e in new}

    def rows(entries: Iterable[Entry]) -> int | None:
        counts = [e.get("rows") for e in entries]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    def brief(e: Entry) -> Entry:
        return {"path": e["path"], "sha256": e["sha256"], "size": e["size"], "rows": e.get("rows")}

    return {
        "added": [brief(after[p]) for p in sorted(after.keys() - before.keys())],
        "removed": [brief(before[p]) for p in sorted(before.keys() - after.keys())],
        "replaced": [
            {"path": p, "from": brief(before[p]), "to": brief(after[p])}
            for p in sorted(before.keys() & after.keys())
            if before[p]["sha256"] != after[p]["sha256"]
        ],
        "rows": {"from": rows(before.values()), "to": rows(after.values())},
    }
