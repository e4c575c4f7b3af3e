"""Where classification rules come from when ``loopline.yml`` gives none: the project's ``dvc.yaml``.

DVC already says what training depends on; deriving the rules from it means a project that
never wrote a ``classify:`` section still retrains on exactly the files that change its model.
Pure: the worker reads ``dvc.yaml`` and the list of ``.dvc`` files at the commit and passes
them in.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipelines.classify import Rule, glob_regex

#: Top-level folders whose contents are data.
DATA_DIRS = frozenset({"data", "datasets"})
#: File types that are data wherever they live.
DATA_SUFFIXES = frozenset(
    {
        ".csv", ".tsv", ".parquet", ".feather", ".arrow", ".avro", ".orc", ".jsonl", ".ndjson",
        ".h5", ".hdf5", ".npy", ".npz", ".xls", ".xlsx", ".zip", ".gz", ".tar", ".tgz",
    }
)  # fmt: skip
_TEMPLATE = re.compile(r"\$\{[^}]*\}")


def _default(kind: str, pattern: str, why: str = "") -> Rule:
    return Rule(kind, pattern, f"default: {pattern}{why}")


#: ``dvc repro`` writes ``dvc.lock``; committing it alone must not start a pipeline.
LOCK_RULE = Rule("ignore", "dvc.lock", "default: dvc.lock (written by dvc repro)")
DOC_RULES = (_default("ignore", "docs/**"), _default("ignore", "**/*.md"), _default("ignore", "LICENSE*"))
DATA_RULES = (_default("data", "**/*.dvc"), _default("data", "data/**"))
#: Changing the project's own pipeline settings (gate, model, stages) re-runs the whole pipeline.
CONFIG_RULE = _default("training_code", "loopline.yml")
#: The rules of a project with neither a ``classify:`` section nor a ``dvc.yaml``.
DEFAULT_RULES: tuple[Rule, ...] = (
    LOCK_RULE,
    *DOC_RULES,
    *DATA_RULES,
    _default("training_code", "dvc.yaml"),
    _default("training_code", "params.yaml"),
    _default("training_code", "src/train/**"),
    _default("training_code", "train/**"),
    CONFIG_RULE,
)


@dataclass(frozen=True)
class _Path:
    path: str
    stage: str
    key: str  # deps[1], outs[0], metrics[0], params

    def name(self, note: str = "") -> str:
        return f"dvc.yaml: stages.{self.stage}.{self.key}: {self.path}{note}"


def _clean(raw: str, wdir: str) -> str | None:
    """A repository-relative POSIX path, templated parts as ``*``; None if outside the repo."""
    path = posixpath.normpath(posixpath.join(wdir, _TEMPLATE.sub("*", raw.strip())))
    if path in (".", "") or path.startswith(("/", "../")) or path == "..":
        return None
    return path


def _entries(value: Any) -> list[str]:
    """Paths listed under deps/outs/metrics/plots: strings, or one-key mappings with options."""
    items = value if isinstance(value, list) else []
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(k for k in item if isinstance(k, str))
    return out


def _params_files(value: Any) -> list[str]:
    """``params:`` entries name keys of ``params.yaml`` or map other files to their keys."""
    files: list[str] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, str):
            files.append("params.yaml")
        elif isinstance(item, dict):
            files.extend(k for k in item if isinstance(k, str))
    return files


def _stages(dvc: Any) -> list[tuple[str, dict[str, Any]]]:
    stages = dvc.get("stages") if isinstance(dvc, dict) else None
    result: list[tuple[str, dict[str, Any]]] = []
    for name, stage in (stages or {}).items() if isinstance(stages, dict) else ():
        if isinstance(stage, dict) and isinstance(stage.get("do"), dict):  # foreach … do
            stage = stage["do"]
        if isinstance(stage, dict):
            result.append((str(name), stage))
    return result


def _looks_like_data(path: str, tracked: frozenset[str]) -> bool:
    return (
        path in tracked
        or path.endswith(".dvc")
        or path.split("/", 1)[0] in DATA_DIRS
        or posixpath.splitext(path)[1].lower() in DATA_SUFFIXES
    )


def dvc_rules(dvc: Any, dvc_files: Iterable[str] = ()) -> tuple[Rule, ...]:
    """Classification rules derived from a parsed ``dvc.yaml``, in the order they are tried.

    - ``dvc.lock`` and docs are ``ignore``;
    - a stage dependency is ``data`` when it is tracked by a ``.dvc`` file (``dvc_files``), lies
      under a data folder (``data/``, ``datasets/``), has a data file type, or is written by a
      stage that depends on nothing but data (a download or import stage);
      any other dependency (scripts, source folders) is ``training_code``;
    - the ``params`` files of stages, ``dvc.yaml`` itself and ``loopline.yml`` are ``training_code``;
    - ``.dvc`` files and ``data/`` are ``data``;
    - what other stages write (``outs``, ``metrics``, ``plots``: intermediates, models, metrics)
      is ``ignore``: like ``dvc.lock``, ``dvc repro`` produces it, so committing it is not a change;
    - everything else is left unmatched, i.e. ``app_code``.

    Deeper paths are tried before the folders that contain them, so a script inside a data
    folder listed on its own keeps its own rule.
    """
    tracked = frozenset(f.removesuffix(".dvc") for f in dvc_files if f.endswith(".dvc"))
    stages = _stages(dvc)
    deps: list[_Path] = []
    outs: list[_Path] = []
    params: list[_Path] = []
    for name, stage in stages:
        wdir = stage["wdir"] if isinstance(stage.get("wdir"), str) else "."
        for i, raw in enumerate(_entries(stage.get("deps"))):
            if (path := _clean(raw, wdir)) is not None:
                deps.append(_Path(path, name, f"deps[{i}]"))
        for key in ("outs", "metrics", "plots"):
            for i, raw in enumerate(_entries(stage.get(key))):
                if (path := _clean(raw, wdir)) is not None:
                    outs.append(_Path(path, name, f"{key}[{i}]"))
        for raw in _params_files(stage.get("params")):
            if (path := _clean(raw, wdir)) is not None:
                params.append(_Path(path, name, "params"))
    # A source stage depends on nothing but data: what it writes is the data training starts from.
    code_stages = {d.stage for d in deps if not _looks_like_data(d.path, tracked)}
    source_outs = {o.path for o in outs if o.stage not in code_stages}
    written = {o.path for o in outs}

    by_path: dict[str, Rule] = {}
    for dep in deps:
        if dep.path in by_path or (dep.path in written and dep.path not in source_outs):
            continue  # seen, or an intermediate that dvc repro writes
        data = dep.path in source_outs or _looks_like_data(dep.path, tracked)
        by_path[dep.path] = Rule("data" if data else "training_code", dep.path, dep.name())
    for out in outs:
        if out.path in source_outs and out.path not in by_path:
            by_path[out.path] = Rule("data", out.path, out.name(" (written by a data-only stage)"))
    ordered = sorted(by_path.values(), key=lambda r: -r.pattern.count("/"))

    rules: list[Rule] = [LOCK_RULE, *DOC_RULES]
    for rule in ordered:
        rules += [rule, Rule(rule.kind, f"{rule.pattern}/**", rule.name)]
        if rule.kind == "data":
            rules.append(Rule(rule.kind, f"{rule.pattern}.dvc", rule.name))
    seen_params: set[str] = set()
    for p in params:
        if p.path not in seen_params:
            seen_params.add(p.path)
            rules.append(Rule("training_code", p.path, p.name()))
    rules += [Rule("training_code", "dvc.yaml", "dvc.yaml: the pipeline itself"), CONFIG_RULE, *DATA_RULES]
    for out in outs:  # unless an earlier rule already decides them (e.g. data/**)
        if not any(glob_regex(rule.pattern).match(out.path) for rule in rules):
            name = out.name(" (written by dvc repro)")
            rules += [Rule("ignore", out.path, name), Rule("ignore", f"{out.path}/**", name)]
    return tuple(rules)


def default_rules(dvc: Any | None, dvc_files: Iterable[str] = ()) -> tuple[Rule, ...]:
    """The rules of a project whose ``loopline.yml`` has no ``classify:`` section."""
    return DEFAULT_RULES if dvc is None else dvc_rules(dvc, dvc_files)
