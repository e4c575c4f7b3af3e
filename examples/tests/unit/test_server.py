"""Unit tests for app/server.py: artifact verification and the HTTP handlers."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest

from app import server
from app.features import N_FEATURES


class ConstantModel:
    """Stands in for the sklearn pipeline: predicts 1 for every row."""

    def predict(self, rows: list[list[float]]) -> list[int]:
        return [1] * len(rows)


def _write_model(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_verified_accepts_matching_hash(tmp_path: Path) -> None:
    path, sha = _write_model(tmp_path)
    obj, actual = server.load_verified(path, sha.upper())
    assert obj == {"not": "a model"} and actual == sha


@pytest.mark.parametrize("expected", ["", "0" * 64])
def test_load_verified_rejects_wrong_or_missing_hash(tmp_path: Path, expected: str) -> None:
    path, _ = _write_model(tmp_path)
    with pytest.raises(server.ArtifactError):
        server.load_verified(path, expected)


def test_main_exits_2_on_hash_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _write_model(tmp_path)
    monkeypatch.setenv("LOOPLINE_MODEL_PATH", str(path))
    monkeypatch.setenv("LOOPLINE_MODEL_SHA256", "f" * 64)
    with pytest.raises(SystemExit) as exc:
        server.main()
    assert exc.value.code == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_endpoints() -> None:
    client = server.create_app(ConstantModel(), "abc123").test_client()
    assert client.get("/healthz").get_json() == {"status": "ok", "model_sha256": "abc123"}

    ok = client.post("/predict", json={"instances": [[0.5] * N_FEATURES] * 2})
    assert ok.status_code == 200
    assert ok.get_json() == {"predictions": [1, 1], "model_sha256": "abc123"}

    bad = client.post("/predict", json={"instances": [[0.5]]})
    assert bad.status_code == 400 and "error" in bad.get_json()
    not_json = client.post("/predict", data="nope", content_type="application/json")
    assert not_json.status_code == 400
