"""Classification benchmark: how long classify() + plan() take for a 100,000-file diff, and how long
the ``git diff`` that feeds them takes on a real repository with that many changed files.

Usage: python bench/classify.py [--files 100000] [--repeat 5] [--no-git]

Part 1 (pure): synthetic changed paths (1% renames, which count twice) against three rule sets:
the sample project's ``loopline.yml``, the rules derived from its ``dvc.yaml``, and 60 globs.
Part 2 (git): a bare repository built with ``git fast-import`` whose second commit changes every
one of ``--files`` files (and renames 1% of them), then ``Mirror.changed_files`` (``git diff -z
--name-status -M``) and the whole dry run (:func:`workers.explain.explain`) between the two.
Part 3 (a push): 300 commits touching 5,000 files pushed to a bare remote, then what the intake
does with it: fetch into a fresh mirror, ``base_for``, ``changed_files``, the whole dry run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.classify import Change, Rule, classify  # noqa: E402
from pipelines.config import RepoConfig  # noqa: E402
from pipelines.events import Event  # noqa: E402
from pipelines.plan import plan  # noqa: E402
from pipelines.project import parse_project_config  # noqa: E402
from pipelines.rules import dvc_rules  # noqa: E402
from workers.explain import explain  # noqa: E402
from workers.gitops import Mirror  # noqa: E402
from workers.projects import project_from  # noqa: E402

TOPS = ("app", "src/train", "data/raw", "docs", "tests/unit", "lib/vendor/pkg", "notebooks", "web/static")
SUFFIXES = ("py", "md", "csv", "txt", "json", "png")


def synthetic_paths(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [f"{rnd.choice(TOPS)}/d{i % 211}/s{i % 13}/f{i}.{rnd.choice(SUFFIXES)}" for i in range(n)]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall-clock and best CPU seconds (this process and its git children) of ``repeat`` calls."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), _cpu()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, _cpu() - start_cpu)
    return wall, cpu, result


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def rule_sets() -> dict[str, tuple[Rule, ...]]:
    example = parse_project_config(yaml.safe_load((ROOT / "examples/loopline.yml").read_text())).rules
    derived = dvc_rules(yaml.safe_load((ROOT / "examples/dvc.yaml").read_text()))
    many = tuple(
        Rule(kind, pattern, f"classify.{kind}[{i}]: {pattern}")
        for i in range(15)
        for kind, pattern in (
            ("ignore", f"docs/part{i}/**"),
            ("data", f"**/*.dat{i}"),
            ("training_code", f"src/model{i}/**"),
            ("app_code", f"services/s{i}/*.py"),
        )
    )
    return {"loopline.yml (examples)": example, "dvc.yaml (examples)": derived, "60 globs": many}


def bench_pure(n: int, repeat: int) -> None:
    paths = synthetic_paths(n)
    changes = [Change(p, "R", paths[i - 1]) if i % 100 == 0 else Change(p, "M") for i, p in enumerate(paths)]
    print(f"classify() + plan() of {n:,} changed files ({n // 100:,} renames), best of {repeat}:")
    print(
        f"  {'rules':<24} {'rules':>5} {'wall s':>7} {'CPU s':>7} {'µs/file':>8} {'JSON s':>7} {'JSON MB':>8}"
    )
    for name, rules in rule_sets().items():

        def run(rules: tuple[Rule, ...] = rules) -> Any:
            result = classify(changes, rules)
            plan(result.kinds, deployable=True, approval=True)
            return result

        wall, cpu, result = best_of(repeat, run)
        json_wall, _, text = best_of(repeat, lambda result=result: json.dumps(result.to_dict()))
        print(
            f"  {name:<24} {len(rules):>5} {wall:>7.3f} {cpu:>7.3f} {cpu / len(result.files) * 1e6:>8.2f}"
            f" {json_wall:>7.3f} {len(text) / 1e6:>8.1f}"
        )


def fast_import(repo: Path, n: int) -> tuple[str, str]:
    """Two commits: every file added, then every file changed and 1% of them renamed."""
    chunks: list[bytes] = []
    paths = synthetic_paths(n)
    for c, label in enumerate((b"v1", b"v2")):
        msg = b"commit %d" % c
        chunks.append(
            b"commit refs/heads/main\ncommitter b <b@example.invalid> %d +0000\n" % (1_700_000_000 + c)
        )
        chunks.append(b"data %d\n%s\n" % (len(msg), msg))
        for i, path in enumerate(paths):
            body = b"%s %d\n" % (label if i % 100 else b"v1", i)  # renamed files keep their content
            target = f"moved/{path}" if c == 1 and i % 100 == 0 else path
            if c == 1 and i % 100 == 0:
                chunks.append(b"D %s\n" % path.encode())
            chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (target.encode(), len(body), body))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(chunks), check=True)
    rev = subprocess.run(
        ["git", "rev-parse", "main~1", "main"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.split()
    return rev[0], rev[1]


def bench_git(n: int, repeat: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopline-bench-classify-"))
    try:
        start = time.perf_counter()
        before, after = fast_import(tmp / "repo.git", n)
        print(
            f"\ngit: built a {n:,}-file repository (git fast-import) in {time.perf_counter() - start:.1f} s"
        )
        repo = Mirror(path=tmp / "repo.git", url="")
        wall, cpu, changes = best_of(repeat, lambda: repo.changed_files(before, after))
        renames = sum(c.status == "R" for c in changes)
        print(
            f"  git diff -z --name-status -M ({len(changes):,} changes, {renames:,} renames):"
            f" {wall:.3f} s wall, {cpu:.3f} s CPU"
        )
        config = RepoConfig(name="bench", provider="git", match="bench", url=str(repo.path))
        event = Event("push", "bench", "refs/heads/main", before, after)

        def dry_run() -> Any:
            return explain(repo, config, project_from(repo, after), [event], "refs/heads/main", after)

        wall, cpu, explained = best_of(repeat, dry_run)
        print(
            f"  whole dry run (merge-base, diff, read loopline.yml and dvc.yaml, classify, plan;"
            f" {len(explained.classification.files):,} files): {wall:.3f} s wall, {cpu:.3f} s CPU"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def history_push(root: Path, commits: int, files: int) -> tuple[Path, str, str]:
    """A bare remote whose main moved by ``commits`` commits touching ``files`` distinct paths."""
    remote, work = root / "remote.git", root / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    chunks: list[bytes] = []
    for c in range(commits + 1):
        chunks.append(
            b"commit refs/heads/main\ncommitter b <b@example.invalid> %d +0000\n" % (1_700_000_000 + c)
        )
        chunks.append(b"data 6\ncommit\n")
        span = range(0, 1000) if c == 0 else range((c - 1) * files // commits, c * files // commits)
        for i in span:
            path = f"{TOPS[i % len(TOPS)]}/d{i % 97}/{'base' if c == 0 else 'f'}{i}.py"
            chunks.append(b"M 100644 inline %s\ndata 2\n%d\n" % (path.encode(), i % 10))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=work, input=b"".join(chunks), check=True)
    revs = subprocess.run(
        ["git", "rev-parse", f"main~{commits}", "main"], cwd=work, check=True, capture_output=True, text=True
    ).stdout.split()
    subprocess.run(["git", "push", "-q", str(remote), "main"], cwd=work, check=True)
    return remote, revs[0], revs[1]


def bench_history(repeat: int, commits: int = 300, files: int = 5000) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopline-bench-history-"))
    try:
        remote, before, after = history_push(tmp, commits, files)
        print(f"\na push of {commits} commits touching {files:,} files, as the intake handles it:")

        def fresh_fetch() -> Mirror:
            shutil.rmtree(tmp / "mirror.git", ignore_errors=True)
            repo = Mirror(path=tmp / "mirror.git", url=str(remote))
            repo.update()
            return repo

        wall, cpu, repo = best_of(repeat, fresh_fetch)
        print(f"  clone --mirror:           {wall:.3f} s wall, {cpu:.3f} s CPU")
        wall, cpu, _ = best_of(repeat, repo.update)
        print(f"  fetch (nothing new):      {wall:.3f} s wall, {cpu:.3f} s CPU")
        wall, cpu, base = best_of(repeat, lambda: repo.base_for(before, after, "refs/heads/main"))
        print(f"  base_for (fast-forward):  {wall:.3f} s wall, {cpu:.3f} s CPU")
        wall, cpu, changes = best_of(repeat, lambda: repo.changed_files(base, after))
        label = f"changed_files ({len(changes):,}):"
        print(f"  {label:<25} {wall:.3f} s wall, {cpu:.3f} s CPU")
        config = RepoConfig(name="bench", provider="git", match="bench", url=str(remote))
        event = Event("push", "bench", "refs/heads/main", before, after)
        wall, cpu, _ = best_of(
            repeat,
            lambda: explain(repo, config, project_from(repo, after), [event], "refs/heads/main", after),
        )
        print(f"  whole dry run:            {wall:.3f} s wall, {cpu:.3f} s CPU")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-git", action="store_true", help="skip the git part")
    args = parser.parse_args()
    bench_pure(args.files, args.repeat)
    if not args.no_git:
        bench_git(args.files, max(1, args.repeat // 2))
        bench_history(args.repeat)


if __name__ == "__main__":
    main()
