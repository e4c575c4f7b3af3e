"""Configuration errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.settings import Settings
from pipelines.config import ConfigError, parse_project_config, parse_server_config


def test_project_defaults() -> None:
    cfg = parse_project_config(None)
    assert cfg.stages["retrain"] == "dvc repro"
    assert cfg.deploy.target == "local" and cfg.debounce_seconds == 30


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"stages": {"deploy": {"target": "k8s"}}}, "stages.deploy.target", "must be"),
        ({"stages": {"deploy": {"approval": "maybe"}}}, "stages.deploy.approval", "must be"),
        ({"stages": {"lint": "ruff"}}, "stages.lint", "unknown stage"),
        ({"classify": {"model": ["x"]}}, "classify.model", "kind must be"),
        ({"classify": {"data": "data/**"}}, "classify.data", "list of glob"),
        ({"gate": {"min": "high"}}, "gate.min", "number"),
        ({"data": {"debounce_seconds": -1}}, "data.debounce_seconds", "0 to 3600"),
        ({"model": {"artifact": "../../etc/passwd"}}, "model.artifact", "inside the repository"),
        ({"colour": 1}, "colour", "unknown key"),
        (["a"], "(top level)", "mapping"),
    ],
)
def test_project_errors(raw: object, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_project_config(raw, "repo/loopline.yml")
    assert info.value.key == key and problem in info.value.problem
    assert str(info.value).startswith("repo/loopline.yml: ")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"repositories": [{"provider": "github", "url": "u"}]}, "repositories[0].name"),
        ({"repositories": [{"name": "a", "provider": "svn", "url": "u"}]}, "repositories[0].provider"),
        ({"repositories": [{"name": "a"}]}, "repositories[0].url"),
        ({"repositories": [{"name": "a", "url": "u"}, {"name": "a", "url": "v"}]}, "repositories[1].name"),
        ({"repositories": [{"name": "a", "url": "u", "branches": []}]}, "repositories[0].branches"),
        ({"repositories": [{"name": "a b", "url": "u"}]}, "repositories[0].name"),
    ],
)
def test_server_errors(raw: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config(raw, "loopline.yaml")
    assert info.value.key == key


def test_settings_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "loopline.yaml"
    bad.write_text("repositories: [\n")
    with pytest.raises(ConfigError, match=r"loopline.yaml: \(file\): cannot be read"):
        Settings.from_env({"LOOPLINE_CONFIG": str(bad), "LOOPLINE_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env({"LOOPLINE_CONFIG": str(tmp_path / "missing.yaml")})


def test_missing_secret_is_a_start_error(tmp_path: Path) -> None:
    cfg = tmp_path / "loopline.yaml"
    cfg.write_text("repositories:\n  - {name: a, url: /x, secret_env: A_SECRET}\n")
    with pytest.raises(ConfigError, match="A_SECRET is not set"):
        Settings.from_env({"LOOPLINE_CONFIG": str(cfg), "LOOPLINE_HOME": str(tmp_path)})
    settings = Settings.from_env(
        {"LOOPLINE_CONFIG": str(cfg), "LOOPLINE_HOME": str(tmp_path), "A_SECRET": "s"}
    )
    assert settings.secrets == {"a": b"s"} and "s'" not in repr(settings)
