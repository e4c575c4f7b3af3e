"""Configuration errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from pipelines.config import ConfigError, parse_server_config
from pipelines.project import parse_project_config


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


def _lake(entry: object) -> dict:
    return {"repositories": [{"name": "a", "url": "/x", "data_lake": [entry]}]}


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ({"s3": {"prefix": "in/"}}, "repositories[0].data_lake[0].s3.bucket", "is required"),
        (
            {"s3": {"bucket": "b", "secret_key": "AKIA…"}},
            "repositories[0].data_lake[0].s3.secret_key",
            "_env",
        ),
        ({"s3": {"bucket": "b", "access_key_env": "A"}}, "repositories[0].data_lake[0].s3", "go together"),
        (
            {"s3": {"bucket": "b", "access_key_env": "not a name", "secret_key_env": "S"}},
            "repositories[0].data_lake[0].s3.access_key_env",
            "NAME",
        ),
        (
            {"s3": {"bucket": "b", "endpoint_url": "minio:9000"}},
            "repositories[0].data_lake[0].s3.endpoint_url",
            "http",
        ),
        ({"s3": {"bucket": "b", "prefix": 3}}, "repositories[0].data_lake[0].s3.prefix", "string"),
        ({"azure": {"account": "a"}}, "repositories[0].data_lake[0].azure.container", "is required"),
        (
            {"azure": {"account": "a", "container": "c", "sas": "sv=…"}},
            "repositories[0].data_lake[0].azure.sas",
            "unknown key",
        ),
        ({"s3": {"bucket": "b"}, "folder": "/x"}, "repositories[0].data_lake[0]", "exactly one"),
        ({"gcs": {"bucket": "b"}}, "repositories[0].data_lake[0]", "exactly one"),
        ({"folder": ""}, "repositories[0].data_lake[0].folder", "non-empty"),
    ],
)
def test_data_lake_errors(entry: object, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_config(_lake(entry), "loopline.yaml")
    assert info.value.key == key and problem in info.value.problem


def test_data_lake_entries_and_matching() -> None:
    from pipelines.config import AzureLake, S3Lake, lake_matches
    from pipelines.events import DataObject

    raw = _lake(
        {
            "s3": {
                "bucket": "b",
                "prefix": "in/",
                "endpoint_url": "http://minio:9000",
                "region": "eu-west-1",
                "access_key_env": "LAKE_KEY",
                "secret_key_env": "LAKE_SECRET",
            }
        }
    )
    raw["repositories"][0]["data_lake"].append(
        {"azure": {"account": "acct", "container": "c", "credential_env": "AZ"}}
    )
    repos = parse_server_config(raw)
    s3, azure = (e.s3 or e.azure for e in repos[0].data_lake)
    assert s3 == S3Lake("b", "in/", "http://minio:9000", "eu-west-1", "LAKE_KEY", "LAKE_SECRET", None)
    assert isinstance(azure, AzureLake) and azure.base_url == "https://acct.blob.core.windows.net"
    assert lake_matches(repos, DataObject(store="s3", bucket="b", key="in/x/y.csv")) == [("a", "x/y.csv")]
    assert lake_matches(repos, DataObject(store="s3", bucket="b", key="out/y.csv")) == []
    assert lake_matches(repos, DataObject(store="s3", bucket="c", key="in/y.csv")) == []
    assert lake_matches(repos, DataObject(store="azure", account="acct", bucket="c", key="k")) == [("a", "k")]
    assert lake_matches(repos, DataObject(store="azure", account="other", bucket="c", key="k")) == []


def test_the_deploy_example_parses() -> None:
    import yaml

    from tests.conftest import ROOT

    repos = parse_server_config(yaml.safe_load((ROOT / "deploy/loopline.example.yaml").read_text()))
    kinds = [next(k for k in ("folder", "s3", "azure") if getattr(e, k)) for e in repos[0].data_lake]
    assert kinds == ["folder", "s3", "azure"]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LOOPLINE_STAGE_TIMEOUT", "soon", "expected a number"),
        ("LOOPLINE_MAX_BODY_BYTES", "1.5", "expected an integer"),
        ("LOOPLINE_MAX_BODY_BYTES", "0", "greater than 0"),
    ],
)
def test_bad_variables_name_the_variable(tmp_path: Path, variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"LOOPLINE_HOME": str(tmp_path), variable: value})
    assert (info.value.source, info.value.key) == ("environment", variable) and problem in info.value.problem


def test_settings_from_variables(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "LOOPLINE_HOME": str(tmp_path),
            "LOOPLINE_STAGE_TIMEOUT": "90",
            "LOOPLINE_PUBLIC_URL": "https://ci.example.com/",
            "LOOPLINE_API_TOKEN": "",  # empty: unset
            "LOOPLINE_MODEL_PATH": "/not/a/setting",
        }
    )
    assert (settings.stage_timeout, settings.public_url) == (90.0, "https://ci.example.com")
    assert settings.api_token is None and settings.database_url == f"sqlite:///{tmp_path / 'loopline.db'}"
