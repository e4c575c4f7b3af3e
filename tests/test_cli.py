"""The command line: explain on a real repository, install-hook, reports, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from loopline.cli import main
from pipelines.config import ConfigError
from tests.conftest import Project, git


def test_explain_json(project: Project) -> None:
    before = project.head()
    (project.work / "app/server.py").rename(project.work / "app/serve.py")
    after = project.commit({"docs/overview.md": "x\n", "params.yaml": "prepare: {test_size: 0.3, seed: 1}\n"})
    result = CliRunner().invoke(
        main, ["explain", "--repo", str(project.work), "--before", before, "--after", after, "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    files = {f["path"]: (f["status"], f["kind"], f["rule"]) for f in data["files"]}
    assert files["docs/overview.md"] == ("M", "ignore", "classify.ignore[0]: docs/**")
    assert files["params.yaml"] == ("M", "training_code", "classify.training_code[2]: params.yaml")
    assert files["app/server.py"][:2] == ("R", "app_code") and files["app/serve.py"][:2] == ("R", "app_code")
    assert data["kinds"] == ["training_code", "app_code"]
    assert data["stages"] == [
        "environment",
        "unit_tests",
        "retrain",
        "evaluate",
        "register",
        "integration_tests",
        "deploy",
    ]


def test_explain_text_and_new_branch(project: Project) -> None:
    git("checkout", "-qb", "feature", cwd=project.work)
    after = project.commit({"README.md": "# docs only\n"})
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "--repo",
            str(project.work),
            "--before",
            "0" * 40,
            "--after",
            after,
            "--branch",
            "feature",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"refs/heads/feature {after[:12]}, compared with ")
    assert lines[1].split() == ["M", "README.md", "ignore", "(classify.ignore[1]:", "**/*.md)"]
    assert lines[2:] == [
        "kinds:  (none)",
        "stages: (none)",
        "reason: nothing to build: only ignored files changed",
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--before", "HEAD", "--after", "f" * 40],
            "Error: unknown commit 'ffffffffffffffffffffffffffffffffffffffff'",
        ),
        (["--before", "nope", "--after", "HEAD"], "Error: unknown commit 'nope'"),
        (["--after", "HEAD", "--branch", "a..b"], "Error: invalid branch name 'a..b'"),
        (["--after", "HEAD", "--tag", "-x"], "Error: invalid tag name '-x'"),
        (["--after", "--", "--before", "HEAD"], "Error: unknown commit '--'"),
        (["--after", "--since=2020"], "Error: unknown commit '--since=2020'"),
    ],
)
def test_explain_bad_input_is_one_line(project: Project, args: list[str], error: str) -> None:
    result = CliRunner().invoke(main, ["explain", "--repo", str(project.work), *args])
    assert result.exit_code == 1 and result.output == error + "\n"


def test_explain_outside_a_repository_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["explain", "--repo", str(tmp_path), "--after", "HEAD"])
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path} is not a git repository\n"


def test_install_hook_checks_its_arguments(tmp_path: Path, project: Project) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["install-hook", str(tmp_path), "--url", "http://127.0.0.1:1/hooks/git"])
    assert bad.exit_code == 1 and "not a bare git repository" in bad.output
    bad_url = runner.invoke(main, ["install-hook", str(project.remote), "--url", "file:///etc/passwd"])
    assert bad_url.exit_code == 1 and "http(s)" in bad_url.output
    ok = runner.invoke(main, ["install-hook", str(project.remote), "--url", "http://127.0.0.1:9/hooks/git"])
    assert ok.exit_code == 0
    hook = project.remote / "hooks" / "post-receive"
    assert hook.stat().st_mode & 0o111
    # Loopline is down: the push still succeeds and the hook says clearly what happened.
    out = project.push()
    assert "loopline: could not notify http://127.0.0.1:9/hooks/git" in out


def test_bad_server_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "loopline.yaml"
    cfg.write_text("repositories:\n  - {name: x, provider: svn, url: /x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "loopline", "runs"],
        capture_output=True,
        text=True,
        env={"LOOPLINE_CONFIG": str(cfg), "LOOPLINE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"Error: {cfg}: repositories[0].provider: must be one of github, gitlab, gitea, "
        "forgejo, bitbucket, git"
    )


def test_reports_on_an_empty_store(tmp_path: Path) -> None:
    env = {"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_CONFIG": ""}
    runner = CliRunner()
    assert runner.invoke(main, ["runs"], env=env).output.strip() == "no runs yet"
    assert runner.invoke(main, ["models"], env=env).output.strip() == "no models yet"
    missing = runner.invoke(main, ["events", "nope"], env=env)
    assert missing.exit_code == 1 and "no event 'nope'" in missing.output


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


@pytest.mark.parametrize("path", _command_paths(main), ids=lambda p: " ".join(p) or "loopline")
def test_every_help_exits_0(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_only_loopline_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("boom")
    @click.argument("kind")
    def boom(kind: str) -> None:
        raise {"ours": ConfigError("f.yml", "key", "problem"), "bug": KeyError("x")}[kind]

    monkeypatch.setitem(main.commands, "boom", boom)
    ours = CliRunner().invoke(main, ["boom", "ours"])
    assert (ours.exit_code, ours.output) == (1, "Error: f.yml: key: problem\n")
    bug = CliRunner().invoke(main, ["boom", "bug"])
    assert isinstance(bug.exception, KeyError)  # a bug keeps its traceback
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
