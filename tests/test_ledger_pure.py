"""The pure parts of the data ledger: manifests (apply, hash, diff) and profiles (merge, PSI)."""

from __future__ import annotations

import numpy as np

from pipelines import ledger
from pipelines.profile import Column, Table, merge, profile, psi


def entry(path: str, sha: str, rows: int | None = 1) -> dict[str, object]:
    return {"path": path, "sha256": sha * 64, "size": 10, "rows": rows}


def test_apply_adds_replaces_removes_and_ignores_the_same_bytes() -> None:
    first = ledger.apply([], [entry("a.csv", "1"), entry("b.csv", "2")], [])
    assert first.added == ["a.csv", "b.csv"] and first.changed
    again = ledger.apply(first.manifest, [entry("a.csv", "1")], ["missing.csv"])
    assert not again.changed and again.manifest == first.manifest
    change = ledger.apply(first.manifest, [entry("b.csv", "3"), entry("c.csv", "4")], ["a.csv"])
    assert (change.added, change.replaced, change.removed) == (["c.csv"], ["b.csv"], ["a.csv"])
    assert [e["path"] for e in change.manifest] == ["b.csv", "c.csv"]
    back = ledger.apply(change.manifest, [entry("c.csv", "5")], ["c.csv"])  # removed and landed again
    assert (back.added, back.replaced, back.removed) == ([], ["c.csv"], [])


def test_manifest_hash_is_paths_and_contents_only() -> None:
    one = [entry("a.csv", "1"), {**entry("b.csv", "2"), "source": {"url": "s3://x/b.csv"}}]
    two = [{**entry("b.csv", "2"), "source": {"url": "folder://y/b.csv"}}, entry("a.csv", "1", rows=None)]
    assert ledger.manifest_sha256(one) == ledger.manifest_sha256(two) != ledger.manifest_sha256(one[:1])


def test_diff_names_files_and_rows() -> None:
    old = [entry("a.csv", "1", 5), entry("b.csv", "2", 7)]
    new = [entry("b.csv", "3", 9), entry("c.csv", "4", 1)]
    change = ledger.diff(old, new)
    assert [e["path"] for e in change["added"]] == ["c.csv"]
    assert [e["path"] for e in change["removed"]] == ["a.csv"]
    assert [(e["path"], e["from"]["rows"], e["to"]["rows"]) for e in change["replaced"]] == [("b.csv", 7, 9)]
    assert change["rows"] == {"from": 12, "to": 10}


def test_merge_and_profile_mixed_columns() -> None:
    numbers = Table("a", 3, {"x": Column("number", "int64", np.array([1.0, 2.0, np.nan]), None)})
    words = Table(
        "b",
        2,
        {
            "x": Column("category", "string", None, ["u", None]),
            "y": Column("category", "string", None, ["p", "q"]),
        },
    )
    merged = merge([numbers, words])
    assert merged.rows == 5 and merged.columns["x"].strings == ["1", "2", None, "u", None]
    assert merged.columns["y"].strings == [None, None, None, "p", "q"]
    found = profile(merged)["columns"]
    assert found["x"]["type"] == "category" and found["x"]["missing"] == 0.4


def test_psi_is_zero_for_the_same_shape_and_grows_with_the_shift() -> None:
    base = np.array([10.0, 20.0, 40.0, 20.0, 10.0])
    assert psi(base, base * 3) == 0.0
    assert (
        0
        < psi(base, np.array([12.0, 22.0, 36.0, 20.0, 10.0]))
        < psi(base, np.array([40.0, 30.0, 20.0, 8.0, 2.0]))
    )
