"""Every history shape a push can have, on real repositories: the changed files come from git.

Each shape is checked twice: through a mirror, as the intake sees it (``workers.explain``), and
through ``loopline explain --json`` run as a real subprocess on the pushed-to bare repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from pipelines.events import ZERO_SHA, Event
from service import create_app
from service.state import loopline
from store.db import Database
from store.deliveries import record_delivery
from store.models import Run
from tests.conftest import ROOT, Project, git, make_settings
from workers.explain import Explanation, explain, locate
from workers.gitops import Mirror
from workers.intake import prepare_run
from workers.projects import project_from

TRAIN = ("environment", "unit_tests", "retrain", "evaluate", "register", "integration_tests")


def through_mirror(project: Project, tmp_path: Path, event: Event) -> Explanation:
    """What the intake computes: fetch into a mirror, locate, read the project, explain."""
    repo = Mirror(path=tmp_path / "mirror.git", url=str(project.remote))
    repo.update()
    config = project.repo_config()
    ref, commit = locate(repo, config, event)
    return explain(repo, config, project_from(repo, commit), [event], ref, commit)


def through_cli(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "loopline", "explain", "--repo", str(repo), *args, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def files_of(result: Explanation | dict[str, Any]) -> list[tuple[str, str, str]]:
    data = result.to_dict() if isinstance(result, Explanation) else result
    return sorted((f["path"], f["status"], f["kind"]) for f in data["files"])


def push_event(before: str, after: str, ref: str = "refs/heads/main") -> Event:
    kind = "tag" if ref.startswith("refs/tags/") else "push"
    return Event(type=kind, repository="churn", ref=ref, before=before, after=after)


def both(
    project: Project, tmp_path: Path, event: Event, cli_args: list[str]
) -> tuple[Explanation, dict[str, Any]]:
    """Explain the push both ways and check they agree on everything."""
    mirrored = through_mirror(project, tmp_path, event)
    printed = through_cli(project.remote, *cli_args)
    assert printed == mirrored.to_dict()
    return mirrored, printed


def test_new_branch_is_compared_with_the_default_branch(project: Project, tmp_path: Path) -> None:
    project.push()
    git("checkout", "-qb", "feature", cwd=project.work)
    project.commit({"app/extra.py": "X = 1\n"})
    after = project.commit({"data/raw/more.csv": "a,b\n1,2\n"})
    project.push("feature")
    git("checkout", "-q", "main", cwd=project.work)
    project.commit({"src/train/train.py": "# main moved on after the branch point\n"})
    project.push()
    event = push_event(ZERO_SHA, after, "refs/heads/feature")
    mirrored, printed = both(project, tmp_path, event, ["--after", after, "--branch", "feature"])
    assert files_of(mirrored) == [("app/extra.py", "A", "app_code"), ("data/raw/more.csv", "A", "data")]
    assert mirrored.plan.stages == (
        "validate_data",
        "environment",
        "unit_tests",
        "retrain",
        "evaluate",
        "register",
        "integration_tests",
    )
    assert printed["kinds"] == ["app_code", "data"]


def force_push(project: Project) -> None:
    git("push", "-qf", "origin", "HEAD:refs/heads/main", cwd=project.work)


def test_force_push_is_compared_at_the_merge_base(project: Project, tmp_path: Path) -> None:
    first = project.head()
    project.push()
    old = project.commit({"app/a.py": "A = 1\n"})
    project.push()
    git("reset", "-q", "--hard", first, cwd=project.work)
    new = project.commit({"src/train/extra.py": "E = 1\n"})
    force_push(project)
    mirrored, _ = both(project, tmp_path, push_event(old, new), ["--before", old, "--after", new])
    assert mirrored.base == first
    assert files_of(mirrored) == [("src/train/extra.py", "A", "training_code")]
    # A rewind (the new tip is an ancestor of the old one) takes files back: they count.
    git("reset", "-q", "--hard", first, cwd=project.work)
    force_push(project)
    rewound, _ = both(project, tmp_path, push_event(new, first), ["--before", new, "--after", first])
    assert files_of(rewound) == [("src/train/extra.py", "D", "training_code")]
    assert rewound.plan.stages == (*TRAIN, "deploy")


def test_rename_counts_under_both_paths(project: Project, tmp_path: Path) -> None:
    before = project.head()
    project.push()
    git("mv", "app/features.py", "src/train/features.py", cwd=project.work)
    after = project.commit({})
    project.push()
    mirrored, printed = both(
        project, tmp_path, push_event(before, after), ["--before", before, "--after", after]
    )
    assert files_of(mirrored) == [
        ("app/features.py", "R", "app_code"),
        ("src/train/features.py", "R", "training_code"),
    ]
    assert printed["kinds"] == ["training_code", "app_code"]


def test_merge_commit_brings_every_file_of_the_merged_branch(project: Project, tmp_path: Path) -> None:
    project.push()
    git("checkout", "-qb", "feature", cwd=project.work)
    project.commit({"src/train/extra.py": "E = 1\n"})
    project.commit({"data/raw/feature.csv": "a\n1\n"})
    git("checkout", "-q", "main", cwd=project.work)
    before = project.commit({"app/main_only.py": "M = 1\n"})
    project.push()
    git("merge", "-q", "--no-ff", "-m", "merge feature", "feature", cwd=project.work)
    after = project.head()
    project.push()
    mirrored, _ = both(project, tmp_path, push_event(before, after), ["--before", before, "--after", after])
    assert files_of(mirrored) == [
        ("data/raw/feature.csv", "A", "data"),
        ("src/train/extra.py", "A", "training_code"),
    ]


def test_deleted_files_count(project: Project, tmp_path: Path) -> None:
    before = project.head()
    project.push()
    (project.work / "app/features.py").unlink()
    (project.work / "docs/overview.md").unlink()
    after = project.commit({})
    project.push()
    mirrored, printed = both(
        project, tmp_path, push_event(before, after), ["--before", before, "--after", after]
    )
    assert files_of(mirrored) == [("app/features.py", "D", "app_code"), ("docs/overview.md", "D", "ignore")]
    assert printed["stages"] == ["environment", "unit_tests", "integration_tests", "deploy"]


def test_tag_is_compared_with_the_previous_release(project: Project, tmp_path: Path) -> None:
    project.commit(
        {"loopline.yml": (project.work / "loopline.yml").read_text() + "release: {tags: ['v*']}\n"}
    )
    git("tag", "v0.9", cwd=project.work)
    project.commit({"app/one.py": "1\n"})
    git("tag", "nightly-1", cwd=project.work)  # not a release tag: not a base
    after = project.commit({"src/train/two.py": "2\n"})
    git("tag", "-a", "-m", "release 1.0", "v1.0", cwd=project.work)
    project.push()
    git("push", "-q", "origin", "--tags", cwd=project.work)
    tag_object = git("rev-parse", "v1.0", cwd=project.work)
    assert tag_object != after  # annotated: the payload's "after" is the tag object
    event = push_event(ZERO_SHA, tag_object, "refs/tags/v1.0")
    mirrored, printed = both(project, tmp_path, event, ["--after", "v1.0", "--tag", "v1.0"])
    assert mirrored.commit == after and mirrored.base == git("rev-parse", "v0.9^{commit}", cwd=project.work)
    assert files_of(mirrored) == [("app/one.py", "A", "app_code"), ("src/train/two.py", "A", "training_code")]
    assert printed["stages"] == ["environment", "deploy"] and "release tag" in printed["reason"]
    # A tag outside release.tags, and a release tag on a commit of no deploy branch: skipped, with why.
    nightly = through_mirror(project, tmp_path, push_event(ZERO_SHA, after, "refs/tags/nightly-1"))
    assert (
        nightly.plan.stages == () and nightly.plan.reason == "tag nightly-1 does not match release.tags (v*)"
    )
    git("checkout", "-qb", "experiment", cwd=project.work)
    side = project.commit({"app/side.py": "S = 1\n"})
    git("tag", "v2.0", cwd=project.work)
    project.push("experiment")
    git("push", "-q", "origin", "v2.0", cwd=project.work)
    off = through_cli(project.remote, "--after", side, "--tag", "v2.0")
    assert off["stages"] == [] and "on no deploy branch" in off["reason"]


def fast_import(work: Path, parent: str, commits: int, files: int) -> str:
    """Append ``commits`` commits to main touching ``files`` distinct paths (some several times)."""
    chunks: list[bytes] = []

    def data(payload: bytes) -> None:
        chunks.append(b"data %d\n%s\n" % (len(payload), payload))

    tops = ("app/gen", "src/train/gen", "data/raw/gen", "docs/gen")
    for c in range(commits):
        chunks.append(
            b"commit refs/heads/main\ncommitter t <t@example.invalid> %d +0000\n" % (1700000000 + c)
        )
        data(b"generated commit %d" % c)
        if c == 0:
            chunks.append(b"from %s\n" % parent.encode())
        for i in range(c * files // commits, (c + 1) * files // commits):
            chunks.append(b"M 100644 inline %s/d%d/f%d.txt\n" % (tops[i % 4].encode(), i % 50, i))
            data(b"%d\n" % i)
        if c % 10 == 9:  # a later commit touches an earlier file again: still one changed path
            chunks.append(b"M 100644 inline app/gen/d0/f0.txt\n")
            data(b"again %d\n" % c)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=work, input=b"".join(chunks), check=True)
    return git("rev-parse", "refs/heads/main", cwd=work)


def test_push_of_300_commits_touching_5000_files(project: Project, tmp_path: Path, db: Database) -> None:
    before = project.head()
    project.push()
    after = fast_import(project.work, before, commits=300, files=5000)
    assert git("rev-list", "--count", f"{before}..{after}", cwd=project.work) == "300"
    project.push()
    mirrored, printed = both(
        project, tmp_path, push_event(before, after), ["--before", before, "--after", after]
    )
    assert len(mirrored.classification.files) == 5000
    assert {f.status for f in mirrored.classification.files} == {"A"}
    assert printed["kinds"] == ["training_code", "app_code", "data"]
    counts = {k: sum(f.kind == k for f in mirrored.classification.files) for k in ("app_code", "ignore")}
    assert counts == {"app_code": 1250, "ignore": 1250}
    # The intake records the same 5,000 files.
    run = intake(tmp_path, project, db, push_event(before, after))
    assert len(run.classification["files"]) == 5000 and run.before == before
    assert files_of(run.classification) == files_of(mirrored)


def intake(tmp_path: Path, project: Project, db: Database, event: Event) -> Run:
    run_id, _ = intake_with_delivery(tmp_path, project, db, event)
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def intake_with_delivery(tmp_path: Path, project: Project, db: Database, event: Event) -> tuple[int, str]:
    settings: Settings = make_settings(tmp_path / "server", (project.repo_config(),), db_url=db.url)
    delivery = record_delivery(
        db,
        provider="git",
        delivery_id=f"{event.ref}:{event.after}",
        body=b"x",
        repository="churn",
        event=event,
    ).event_id
    run_id = prepare_run(settings, db, [delivery]).run_id
    assert run_id is not None
    return run_id, delivery


def test_submodule_pointer_change_is_one_path_never_fetched(
    project: Project, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.push()
    # A gitlink to a commit that exists nowhere and a module URL nothing can fetch: Loopline
    # must neither fetch, nor check out, nor recurse into it.
    (project.work / ".gitmodules").write_text(
        '[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = https://example.invalid/lib.git\n'
    )
    git("add", ".gitmodules", cwd=project.work)
    git("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib", cwd=project.work)
    git("commit", "-qm", "add vendor/lib", cwd=project.work)
    before = project.head()
    git("update-index", "--cacheinfo", f"160000,{'2' * 40},vendor/lib", cwd=project.work)
    git("commit", "-qm", "bump vendor/lib", cwd=project.work)
    after = project.head()
    project.push()
    # Whatever the user's git config says (recurse everywhere, hide submodule changes).
    for key, value in {
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_0": "submodule.recurse",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_CONFIG_KEY_1": "submodule.active",
        "GIT_CONFIG_VALUE_1": ".",
        "GIT_CONFIG_KEY_2": "diff.ignoreSubmodules",
        "GIT_CONFIG_VALUE_2": "all",
    }.items():
        monkeypatch.setenv(key, value)
    mirrored, printed = both(
        project, tmp_path, push_event(before, after), ["--before", before, "--after", after]
    )
    assert files_of(mirrored) == [("vendor/lib", "M", "app_code")] and printed["kinds"] == ["app_code"]
    run = intake(tmp_path, project, db, push_event(before, after))
    assert files_of(run.classification) == files_of(mirrored) and run.status == "queued"
    worktree = Path(run.workspace or "")
    assert (worktree / "app/server.py").is_file() and list((worktree / "vendor/lib").iterdir()) == []


def test_intake_records_what_explain_prints(project: Project, tmp_path: Path, db: Database) -> None:
    """One code path: the dry run, the run record, the event and the run API all say the same."""
    before = project.head()
    project.push()
    git("mv", "app/server.py", "app/serve.py", cwd=project.work)
    after = project.commit({"docs/overview.md": "x\n", "params.yaml": "prepare: {test_size: 0.3, seed: 1}\n"})
    project.push()
    run_id, delivery = intake_with_delivery(tmp_path, project, db, push_event(before, after))
    printed = through_cli(project.work, "--before", before, "--after", after)
    assert {f["path"]: f["rule"] for f in printed["files"]} == {
        "app/server.py": "classify.app_code[0]: app/**",
        "app/serve.py": "classify.app_code[0]: app/**",
        "docs/overview.md": "classify.ignore[0]: docs/**",
        "params.yaml": "classify.training_code[2]: params.yaml",
    }
    app = create_app({"settings": make_settings(tmp_path / "api", db_url=db.url), "TESTING": True})
    run = app.test_client().get(f"/api/runs/{run_id}").get_json()
    event = app.test_client().get(f"/api/events/{delivery}").get_json()
    with app.app_context():
        loopline().db.dispose()
    explanation = {"files": printed["files"], "kinds": printed["kinds"]}
    assert run["classification"] == explanation and event["classification"] == explanation
    assert run["kinds"] == printed["kinds"] == ["training_code", "app_code"]
    assert run["plan"] == [s["name"] for s in run["stages"]] == printed["stages"]
    assert (run["reason"], run["before"]) == (printed["reason"], printed["base"])
    assert event["run_ids"] == [run_id]
