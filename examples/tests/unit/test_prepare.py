"""Unit tests for the `prepare` stage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.train.prepare import COLUMNS, load_base, read_batch, read_raw, split, write_csv


def test_base_dataset_shape() -> None:
    base = load_base()
    assert base.shape == (569, 31) and len(COLUMNS) == 31
    assert set(np.unique(base[:, -1])) == {0.0, 1.0}


def test_split_is_stratified_and_deterministic() -> None:
    base = load_base()
    train, test = split(base, test_size=0.25, seed=42)
    assert len(train) + len(test) == len(base)
    assert len(test) == 143
    assert abs(train[:, -1].mean() - test[:, -1].mean()) < 0.02
    again, _ = split(base, test_size=0.25, seed=42)
    np.testing.assert_array_equal(train, again)


def test_csv_roundtrip_and_column_reordering(tmp_path: Path) -> None:
    rows = load_base()[:5]
    write_csv(tmp_path / "b.csv", rows)
    reversed_header = ",".join(COLUMNS[::-1])
    np.savetxt(tmp_path / "a.csv", rows[:3, ::-1], delimiter=",", header=reversed_header, comments="")
    (tmp_path / ".gitkeep").touch()
    a, b = read_raw(tmp_path)  # sorted by name; .gitkeep ignored
    np.testing.assert_allclose(a, rows[:3])
    np.testing.assert_allclose(b, rows)


def test_read_batch_rejects_wrong_columns(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("foo,target\n1.0,1\n")
    with pytest.raises(ValueError, match="column mismatch"):
        read_batch(tmp_path / "bad.csv")


def test_read_batch_rejects_non_binary_labels(tmp_path: Path) -> None:
    rows = load_base()[:2].copy()
    rows[0, -1] = 2
    write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match="0 or 1"):
        read_batch(tmp_path / "bad.csv")
