"""Changed paths x rules → kinds, as a table; renames count under both paths."""

from __future__ import annotations

import pytest

from pipelines.classify import Change, classify, glob_regex
from pipelines.config import DEFAULT_RULES

EXAMPLE_RULES = (
    ("ignore", "docs/**"),
    ("ignore", "**/*.md"),
    ("data", "data/**"),
    ("data", "**/*.dvc"),
    ("training_code", "src/train/**"),
    ("training_code", "dvc.yaml"),
    ("training_code", "params.yaml"),
    ("app_code", "app/**"),
)


@pytest.mark.parametrize(
    ("paths", "kinds"),
    [
        (["src/train/train.py"], ("training_code",)),
        (["params.yaml"], ("training_code",)),
        (["dvc.yaml"], ("training_code",)),
        (["app/server.py"], ("app_code",)),
        (["app/templates/index.html"], ("app_code",)),
        (["data/raw/batch.csv"], ("data",)),
        (["data.dvc"], ("data",)),
        (["nested/dir/images.dvc"], ("data",)),
        (["docs/overview.md"], ()),
        (["README.md"], ()),
        (["docs/img/diagram.png"], ()),
        (["src/train/README.md"], ()),  # first match wins: **/*.md comes before src/train/**
        (["docs/a.md", "README.md", "app/README.md"], ()),
        (["setup.cfg"], ("app_code",)),  # unmatched → app_code: an unknown change is still tested
        (["tests/unit/test_x.py"], ("app_code",)),
        (["src/train/train.py", "app/server.py"], ("training_code", "app_code")),
        (["app/server.py", "data/raw/x.csv"], ("app_code", "data")),
        (
            ["data/raw/x.csv", "src/train/prepare.py", "app/a.py", "docs/x.md"],
            ("training_code", "app_code", "data"),
        ),
        (["docs/x.md", "params.yaml"], ("training_code",)),
        (["dataset/x.csv"], ("app_code",)),  # data/** must not match a sibling prefix
        (["srcxtrain/x.py"], ("app_code",)),
    ],
)
def test_example_rules(paths: list[str], kinds: tuple[str, ...]) -> None:
    result = classify([Change(p, "M") for p in paths], EXAMPLE_RULES)
    assert result.kinds == kinds
    assert [f.path for f in result.files] == paths


def test_rename_counts_both_paths() -> None:
    result = classify([Change("app/train_helpers.py", "R", old_path="src/train/helpers.py")], EXAMPLE_RULES)
    assert result.kinds == ("training_code", "app_code")
    assert [(f.path, f.kind, f.rule) for f in result.files] == [
        ("src/train/helpers.py", "training_code", "training_code: src/train/**"),
        ("app/train_helpers.py", "app_code", "app_code: app/**"),
    ]


def test_unmatched_rule_is_named() -> None:
    assert classify([Change("Makefile", "A")], EXAMPLE_RULES).files[0].rule == "default: app_code"


@pytest.mark.parametrize(
    ("path", "kinds"),
    [
        ("dvc.yaml", ("training_code",)),
        ("data/x.csv", ("data",)),
        ("docs/a.txt", ()),
        ("LICENSE", ()),
        ("x.dvc", ("data",)),
        ("app.py", ("app_code",)),
    ],
)
def test_default_rules(path: str, kinds: tuple[str, ...]) -> None:
    assert classify([Change(path, "A")], DEFAULT_RULES).kinds == kinds


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("**/*.md", "README.md", True),
        ("**/*.md", "a/b/c.md", True),
        ("*.md", "a/b.md", False),
        ("docs/**", "docs/a/b", True),
        ("docs/**", "docs", False),
        ("a/?.py", "a/b.py", True),
        ("a/?.py", "a/bc.py", False),
        ("data/**/*.csv", "data/x.csv", True),
        ("x[1].py", "x[1].py", True),
    ],
)
def test_glob(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).match(path)) is hit
