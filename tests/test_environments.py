"""Project environments built by uv: keyed by their inputs, built once at a time, reused,
evicted; two projects pinning different scikit-learn versions train side by side."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from pipelines.environment import EnvironmentConfig
from pipelines.project import parse_project_config
from pipelines.schema import ConfigError
from workers import environments, sandbox
from workers.process import run_logged

TRAIN = """\
import json, pickle, sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=300).fit(X, y)
pickle.dump(model, open("model.pkl", "wb"))
json.dump({"sklearn": sklearn.__version__, "accuracy": model.score(X, y)}, open("out.json", "w"))
"""
#: Two releases with wheels for this Python; the newer is the sample project's (in uv's cache).
VERSIONS = ("1.8.0", "1.9.1")


def project(tmp_path: Path, name: str, version: str) -> Path:
    worktree = tmp_path / name
    worktree.mkdir()
    (worktree / "requirements.txt").write_text(f"scikit-learn=={version}\n")
    (worktree / "train.py").write_text(TRAIN)
    return worktree


@pytest.mark.e2e
@pytest.mark.skipif(sandbox.mode() != "bwrap", reason="needs the sandbox")
def test_two_projects_pinning_different_scikit_learn_versions_train_side_by_side(tmp_path: Path) -> None:
    home = tmp_path / "home"
    worktrees = [project(tmp_path, f"p{i}", v) for i, v in enumerate((*VERSIONS, VERSIONS[0]))]
    limits = sandbox.Limits()
    found: dict[str, environments.Environment] = {}
    codes: dict[str, int] = {}

    def train(worktree: Path) -> None:
        with (worktree.parent / f"{worktree.name}.log").open("w+b") as log:
            env = environments.ensure(home, EnvironmentConfig(), worktree, log, limits=limits)
            found[worktree.name] = env
            box = sandbox.Box(worktree=worktree, prefix=env.prefix, limits=limits)
            codes[worktree.name] = run_logged("python train.py", cwd=worktree, log=log, timeout=300, box=box)

    threads = [threading.Thread(target=train, args=(w,)) for w in worktrees]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs = {w.name: (tmp_path / f"{w.name}.log").read_text() for w in worktrees}
    assert codes == {"p0": 0, "p1": 0, "p2": 0}, logs
    for worktree, version in zip(worktrees, (*VERSIONS, VERSIONS[0]), strict=True):
        out = json.loads((worktree / "out.json").read_text())
        assert out["sklearn"] == version and out["accuracy"] > 0.9
    assert found["p0"].key != found["p1"].key and found["p0"].kind == "requirements"
    assert found["p0"].prefix == found["p2"].prefix  # same inputs, one environment …
    assert sum("environment built in" in text for text in (logs["p0"], logs["p2"])) == 1  # … built once
    assert found["p0"].prefix is not None and str(found["p0"].prefix).startswith(
        os.environ["LOOPLINE_ENVIRONMENTS"]
    )
    # Compiled when built: stages see the environment read-only and could not cache bytecode.
    assert list(found["p0"].prefix.glob("lib/python*/site-packages/sklearn/__pycache__/*.pyc"))

    started = time.monotonic()  # a cache hit: no uv at all
    with (tmp_path / "again.log").open("w+b") as log:
        again = environments.ensure(home, EnvironmentConfig(), worktrees[1], log, limits=limits)
    assert again == found["p1"] and time.monotonic() - started < 1.0
    assert (tmp_path / "again.log").read_bytes() == b""


def test_detection_prefers_a_lock_then_requirements_then_pyproject(tmp_path: Path) -> None:
    auto = EnvironmentConfig()
    assert environments.detect(auto, tmp_path).kind == "bare"
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert environments.detect(auto, tmp_path) == EnvironmentConfig(kind="pyproject", file="pyproject.toml")
    (tmp_path / "requirements.txt").write_text("")
    assert environments.detect(auto, tmp_path).kind == "requirements"
    (tmp_path / "uv.lock").write_text("")
    assert environments.detect(EnvironmentConfig(python="3.11"), tmp_path) == EnvironmentConfig(
        kind="lock", file="uv.lock", python="3.11"
    )
    inherit = EnvironmentConfig(kind="inherit")
    assert environments.detect(inherit, tmp_path) == inherit


def test_the_key_follows_the_file_and_the_interpreter(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    config = EnvironmentConfig(kind="requirements", file="requirements.txt")
    python, version = environments.interpreter("3.11")
    first = environments.key_of(config, tmp_path, python, version)
    assert first == environments.key_of(config, tmp_path, python, version)
    assert first != environments.key_of(config, tmp_path, python, version + "x")
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.8.0\n")
    assert first != environments.key_of(config, tmp_path, python, version)


def test_an_interpreter_that_is_not_installed_is_a_clear_error() -> None:
    with pytest.raises(environments.EnvironmentBuildError, match=r"no Python 3\.99 is installed here"):
        environments.interpreter("3.99")


def test_old_environments_are_evicted_but_not_recent_or_locked_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_ENVIRONMENTS", str(tmp_path / "envs"))
    now = time.time()
    for i in range(5):
        ready = tmp_path / "envs" / f"e{i}" / environments.READY
        ready.parent.mkdir(parents=True)
        ready.write_text("{}")
        os.utime(ready, (now - 100_000 + i, now - 100_000 + i))  # e4 is the most recently used
    os.utime(tmp_path / "envs" / "e0" / environments.READY)  # e0 used just now
    building = tmp_path / "envs" / "e1"
    from store.locks import file_lock

    # e1 is being rebuilt by someone (whose lock lies beside the environments: any home shares it)
    with file_lock(tmp_path / "envs" / ".locks" / "e1.lock"):
        removed = environments.evict(tmp_path / "another-home", keep=2)
    assert sorted(p.name for p in removed) == ["e2", "e3"]  # kept: the two most recent, and e1
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == [".locks", "e0", "e1", "e4"]
    assert building.is_dir()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, EnvironmentConfig()),
        ({"environment": "inherit"}, EnvironmentConfig(kind="inherit")),
        (
            {"environment": {"python": "3.11", "lock": "uv.lock"}},
            EnvironmentConfig(kind="lock", file="uv.lock", python="3.11"),
        ),
        (
            {"environment": {"requirements": "req/ci.txt"}},
            EnvironmentConfig(kind="requirements", file="req/ci.txt"),
        ),
        ({"environment": {"python": "3.12"}}, EnvironmentConfig(python="3.12")),
    ],
)
def test_the_environment_key(raw: dict[str, object] | None, expected: EnvironmentConfig) -> None:
    assert parse_project_config(raw).environment == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"environment": "conda"},
            "environment: expected 'inherit' or {python, lock|requirements|pyproject}",
        ),
        (
            {"environment": {"lock": "uv.lock", "requirements": "r.txt"}},
            "environment: choose one of lock, requirements",
        ),
        ({"environment": {"lock": "../x/uv.lock"}}, "environment.lock: must be a path inside the repository"),
        ({"environment": {"python": "three"}}, 'environment.python: expected a version such as "3.11"'),
        ({"environment": {"conda": "env.yml"}}, "environment.conda: unknown key"),
        ({"sandbox": {"network": "no"}}, "sandbox.network: expected true or false"),
        ({"sandbox": {"memory_mb": 1}}, "sandbox.memory_mb: expected an integer from 64 to 1048576"),
        ({"sandbox": {"threads": 1}}, "sandbox.threads: unknown key"),
    ],
)
def test_a_bad_environment_or_sandbox_key_is_one_clear_line(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_project_config(raw, "loopline.yml")
    assert str(err.value) == f"loopline.yml: {message}"


def test_the_sandbox_key() -> None:
    config = parse_project_config({"sandbox": {"network": False, "memory_mb": 1024, "log_mb": 5}}).sandbox
    assert (config.network, config.memory_mb, config.log_mb, config.processes) == (False, 1024, 5, 512)
