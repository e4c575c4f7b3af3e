"""Changed paths x rules → kinds (and the rule that decided), as tables; renames count both paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.classify import UNMATCHED, Change, Rule, classify, glob_regex
from pipelines.config import ConfigError
from pipelines.plan import plan
from pipelines.project import parse_project_config
from pipelines.rules import DEFAULT_RULES, dvc_rules

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: The sample project's own ``loopline.yml`` rules, parsed as a project's would be.
EXAMPLE = parse_project_config(yaml.safe_load((EXAMPLES / "loopline.yml").read_text())).rules
#: Rules derived from the sample project's ``dvc.yaml`` (what it gets without ``classify:``).
DVC = dvc_rules(yaml.safe_load((EXAMPLES / "dvc.yaml").read_text()))
#: A richer pipeline: a download stage, wdir, foreach, custom params, DVC-tracked data, templates.
RICH_DVC = {
    "stages": {
        "download": {
            "cmd": "curl -o raw/events.jsonl https://example.invalid/x",
            "outs": ["raw/events.jsonl"],
        },
        "features": {
            "cmd": "python featurize.py",
            "wdir": "pipeline",
            "deps": ["featurize.py", "../raw/events.jsonl", "../images", "../lib/text"],
            "params": [{"conf/features.yaml": ["window"]}],
            "outs": ["../features"],
        },
        "train": {
            "foreach": ["small", "large"],
            "do": {
                "cmd": "python train.py ${item}",
                "deps": ["train.py", "features", "configs/${item}.toml"],
                "params": ["train"],
                "outs": [{"models/${item}.pkl": {"cache": True}}],
                "metrics": [{"reports/${item}.json": {"cache": False}}],
            },
        },
    }
}
RICH = dvc_rules(RICH_DVC, ["images.dvc", "data/raw.dvc"])
RULES = {"example": EXAMPLE, "dvc": DVC, "rich": RICH, "default": DEFAULT_RULES}


def changes(*specs: str) -> list[Change]:
    """``"M path"`` or ``"R old -> new"``."""
    out = []
    for spec in specs:
        status, _, rest = spec.partition(" ")
        old, arrow, new = rest.partition(" -> ")
        out.append(Change(new, status, old) if arrow else Change(rest, status))
    return out


@pytest.mark.parametrize(
    ("rules", "specs", "kinds", "decided_by"),
    [
        # the sample project's loopline.yml
        (
            "example",
            ["M src/train/train.py"],
            ("training_code",),
            ["classify.training_code[0]: src/train/**"],
        ),
        ("example", ["M params.yaml"], ("training_code",), ["classify.training_code[2]: params.yaml"]),
        ("example", ["M app/server.py"], ("app_code",), ["classify.app_code[0]: app/**"]),
        ("example", ["A data/raw/batch.csv"], ("data",), ["classify.data[0]: data/**"]),
        ("example", ["A nested/dir/images.dvc"], ("data",), ["classify.data[1]: **/*.dvc"]),
        # docs-only pushes start nothing
        (
            "example",
            ["M docs/overview.md", "M README.md"],
            (),
            ["classify.ignore[0]: docs/**", "classify.ignore[1]: **/*.md"],
        ),
        ("example", ["M src/train/README.md"], (), ["classify.ignore[1]: **/*.md"]),  # first match wins
        ("example", ["D docs/img/diagram.png"], (), ["classify.ignore[0]: docs/**"]),
        # unmatched → app_code, and a prefix is not a folder
        ("example", ["M setup.cfg"], ("app_code",), ["default: app_code"]),
        ("example", ["A dataset/x.csv"], ("app_code",), ["default: app_code"]),
        ("example", ["M srcxtrain/x.py"], ("app_code",), ["default: app_code"]),
        # mixed pushes: the union, in canonical order
        ("example", ["M app/a.py", "A data/raw/x.csv"], ("app_code", "data"), None),
        (
            "example",
            ["A data/raw/x.csv", "M src/train/prepare.py", "M app/a.py", "M docs/x.md"],
            ("training_code", "app_code", "data"),
            None,
        ),
        ("example", ["M docs/x.md", "M params.yaml"], ("training_code",), None),
        # renames count under both paths, across kinds
        (
            "example",
            ["R src/train/helpers.py -> app/helpers.py"],
            ("training_code", "app_code"),
            ["classify.training_code[0]: src/train/**", "classify.app_code[0]: app/**"],
        ),
        (
            "example",
            ["R docs/notes.md -> data/raw/notes.csv"],
            ("data",),
            ["classify.ignore[0]: docs/**", "classify.data[0]: data/**"],
        ),
        ("example", ["R app/old.py -> app/new.py"], ("app_code",), None),
        # defaults derived from the sample project's dvc.yaml
        (
            "dvc",
            ["M src/train/train.py"],
            ("training_code",),
            ["dvc.yaml: stages.train.deps[0]: src/train/train.py"],
        ),
        ("dvc", ["A data/raw/2024.csv"], ("data",), ["dvc.yaml: stages.prepare.deps[1]: data/raw"]),
        ("dvc", ["M params.yaml"], ("training_code",), ["dvc.yaml: stages.prepare.params: params.yaml"]),
        ("dvc", ["M dvc.yaml"], ("training_code",), ["dvc.yaml: the pipeline itself"]),
        ("dvc", ["M dvc.lock"], (), ["default: dvc.lock (written by dvc repro)"]),  # alone: no trigger
        (
            "dvc",
            ["M dvc.lock", "M metrics.json"],
            (),
            [
                "default: dvc.lock (written by dvc repro)",
                "dvc.yaml: stages.evaluate.metrics[0]: metrics.json (written by dvc repro)",
            ],
        ),
        ("dvc", ["M dvc.lock", "M src/train/prepare.py"], ("training_code",), None),
        (
            "dvc",
            ["M models/model.pkl"],
            (),
            ["dvc.yaml: stages.train.outs[0]: models/model.pkl (written by dvc repro)"],
        ),
        ("dvc", ["M docs/overview.md", "M README.md"], (), None),
        ("dvc", ["M app/server.py", "M tests/unit/test_x.py"], ("app_code",), ["default: app_code"] * 2),
        ("dvc", ["A data/new.dvc"], ("data",), ["default: **/*.dvc"]),
        ("dvc", ["R src/train/train.py -> app/train.py"], ("training_code", "app_code"), None),
        ("dvc", ["M loopline.yml"], ("training_code",), ["default: loopline.yml"]),
        # a richer dvc.yaml: wdir, foreach, download stage, tracked data, custom params
        (
            "rich",
            ["M pipeline/featurize.py"],
            ("training_code",),
            ["dvc.yaml: stages.features.deps[0]: pipeline/featurize.py"],
        ),
        ("rich", ["M raw/events.jsonl"], ("data",), ["dvc.yaml: stages.features.deps[1]: raw/events.jsonl"]),
        ("rich", ["M images.dvc"], ("data",), ["dvc.yaml: stages.features.deps[2]: images"]),
        (
            "rich",
            ["M lib/text/tokenize.py"],
            ("training_code",),
            ["dvc.yaml: stages.features.deps[3]: lib/text"],
        ),
        (
            "rich",
            ["M pipeline/conf/features.yaml"],
            ("training_code",),
            ["dvc.yaml: stages.features.params: pipeline/conf/features.yaml"],
        ),
        (
            "rich",
            ["M configs/large.toml"],
            ("training_code",),
            ["dvc.yaml: stages.train.deps[2]: configs/*.toml"],
        ),
        (
            "rich",
            ["M reports/small.json"],
            (),
            ["dvc.yaml: stages.train.metrics[0]: reports/*.json (written by dvc repro)"],
        ),
        (
            "rich",
            ["M features/part-0.parquet"],
            (),
            ["dvc.yaml: stages.features.outs[0]: features (written by dvc repro)"],
        ),
        ("rich", ["A data/raw.dvc"], ("data",), ["default: **/*.dvc"]),
        # the built-in defaults (no classify:, no dvc.yaml)
        ("default", ["M dvc.yaml"], ("training_code",), ["default: dvc.yaml"]),
        ("default", ["A data/x.csv"], ("data",), ["default: data/**"]),
        ("default", ["M docs/a.txt", "M LICENSE"], (), ["default: docs/**", "default: LICENSE*"]),
        ("default", ["M dvc.lock"], (), None),
        ("default", ["M app.py"], ("app_code",), ["default: app_code"]),
    ],
)
def test_classification_table(
    rules: str, specs: list[str], kinds: tuple[str, ...], decided_by: list[str] | None
) -> None:
    result = classify(changes(*specs), RULES[rules])
    assert result.kinds == kinds
    paths = [p for c in changes(*specs) for p in ((c.old_path, c.path) if c.old_path else (c.path,))]
    assert [f.path for f in result.files] == paths
    if decided_by is not None:
        assert [f.rule for f in result.files] == decided_by


@pytest.mark.parametrize(
    ("rules", "specs", "deployable", "stages"),
    [
        ("example", ["M docs/a.md", "M README.md"], True, ()),
        ("dvc", ["M dvc.lock"], True, ()),
        ("example", ["M app/a.py"], True, ("environment", "unit_tests", "integration_tests", "deploy")),
        (
            "dvc",
            ["A data/raw/x.csv"],
            False,
            ("validate_data", "environment", "retrain", "evaluate", "register", "integration_tests"),
        ),
        (
            "dvc",
            ["M src/train/train.py", "A data/raw/x.csv", "M app/server.py"],
            True,
            (
                "validate_data",
                "environment",
                "unit_tests",
                "retrain",
                "evaluate",
                "register",
                "integration_tests",
                "deploy",
            ),
        ),
    ],
)
def test_paths_to_stages(rules: str, specs: list[str], deployable: bool, stages: tuple[str, ...]) -> None:
    assert plan(classify(changes(*specs), RULES[rules]).kinds, deployable=deployable).stages == stages


def test_classify_section_replaces_the_derived_rules() -> None:
    config = parse_project_config({"classify": {"app_code": ["**"]}}, dvc=RICH_DVC)
    assert config.rules == (Rule("app_code", "**", "classify.app_code[0]: **"),)
    assert parse_project_config(None, dvc=RICH_DVC).rules == dvc_rules(RICH_DVC)
    assert parse_project_config(None).rules == DEFAULT_RULES


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"release": {"tags": "v*"}}, "loopline.yml: release.tags: expected a list of glob patterns"),
        ({"release": {"branches": ["main"]}}, "loopline.yml: release.branches: unknown key"),
        ({"release": ["v*"]}, "loopline.yml: release: expected a mapping, got list"),
        ({"classify": {"code": ["x"]}}, "loopline.yml: classify.code: kind must be one of"),
    ],
)
def test_bad_rules_and_release_config(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_project_config(raw)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("tags", "tag", "releases"),
    [
        (None, "anything/at/all", True),
        (["v*"], "v1.2.0", True),
        (["v*"], "nightly-3", False),
        ([], "v1", False),
    ],
)
def test_release_tags(tags: list[str] | None, tag: str, releases: bool) -> None:
    raw = {"release": {"tags": tags}} if tags is not None else None
    assert parse_project_config(raw).release.releases(tag) is releases


def test_dvc_rules_survive_odd_dvc_files() -> None:
    odd = {"stages": {"a": {"cmd": "x", "deps": [".", "../outside", 3, None], "outs": "notalist"}, "b": "x"}}
    assert [r.pattern for r in dvc_rules(odd) if r.name.startswith("dvc.yaml: stages")] == []
    assert dvc_rules([]) == dvc_rules({})


def test_fast_matching_agrees_with_trying_every_glob_in_order() -> None:
    """Rules are only tried where they can match (by first segment and extension): that must
    never change which rule wins."""
    patterns = [
        "dvc.yaml", "docs/**", "**/*.md", "*.md", "LICENSE*", "**/*.tar.gz", "**/*.gz", "data/**/*.csv",
        "a/?.py", "src/**", "**/tests/**", ".github/**", "**/*.gitignore", "x[1].py", "**",
    ]  # fmt: skip
    paths = [
        "dvc.yaml", "docs", "docs/a.md", "README.md", "a/README.md", "LICENSE", "LICENSE.txt", "b.tar.gz",
        "c/d.gz", "data/x.csv", "data/y/z.csv", "data/x.tsv", "a/b.py", "a/bc.py", "src/m.py",
        "pkg/tests/t.py", ".github/workflows/ci.yml", ".gitignore", "sub/.gitignore", "x[1].py",
        "noext", "dir.with.dots/file", "a.b/c.md", "src", "weird/\nline.md",
    ]  # fmt: skip
    for start in range(len(patterns)):
        rules = tuple(Rule("app_code", p, f"r{i}") for i, p in enumerate(patterns[start:] + patterns[:start]))
        decided = classify([Change(path, "M") for path in paths], rules).files
        for path, file in zip(paths, decided, strict=True):
            naive = next((r.name for r in rules if glob_regex(r.pattern).match(path)), UNMATCHED)
            assert file.rule == naive, (path, rules)


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
        ("**", "line\nbreak", True),
    ],
)
def test_glob(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).match(path)) is hit
