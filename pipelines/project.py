"""Typed configuration of a project: its own ``loopline.yml``, every key optional.

The classes below are the file's schema (pydantic dataclasses, see :mod:`pipelines.schema`), so
every rule sits next to its key and errors name the file, the key and the problem
(:class:`pipelines.config.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BeforeValidator, Field, StrictBool, StrictFloat, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from pipelines.classify import KINDS, Rule, glob_regex
from pipelines.environment import EnvironmentConfig, SandboxConfig
from pipelines.rules import default_rules
from pipelines.schema import STRICT, NonEmpty, check, explained, load, one_of, problem

DEFAULT_STAGES = {
    "unit_tests": "pytest -q tests/unit",
    "retrain": "dvc repro",
    "integration_tests": "pytest -q tests/integration",
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    """Seconds from ``90``, ``90s``, ``30m``, ``24h`` or ``2d``."""
    if value is None:
        return None
    match = None if isinstance(value, bool) else _DURATION_RE.match(str(value))
    if match is None or float(match[1]) <= 0:
        raise problem("expected a positive duration such as 90s, 30m, 24h or 2d")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _span(low: float, high: float, unit: str = "") -> Any:
    return check(lambda v: low <= v <= high, f"expected {low:g} to {high:g}{unit}")


def _whole(low: int, high: int) -> Any:
    return explained(f"expected an integer from {low} to {high}")


Duration = Annotated[float | None, BeforeValidator(_duration)]
Globs = Annotated[tuple[NonEmpty, ...], explained("expected a list of glob patterns")]
InRepo = Annotated[
    NonEmpty,
    check(
        lambda v: not v.startswith("/") and ".." not in v.split("/"), "must be a path inside the repository"
    ),
]
Kind = Annotated[str, one_of(KINDS, "kind must be")]


@dataclass(frozen=True, config=STRICT)
class ApprovalConfig:
    """``stages.deploy.approval``: ``none``, ``required``, or ``{required, branches, expires_after}``."""

    required: StrictBool = False
    branches: Annotated[tuple[NonEmpty, ...], explained("expected a list of branch names")] = ()
    #: Seconds a run may wait; None: forever.
    expires_after: Duration = None

    def applies_to(self, branch: str | None) -> bool:
        return self.required and (not self.branches or branch in self.branches)

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, raw: Any) -> Any:
        if raw == "none":
            return {}
        if raw == "required":
            return {"required": True}
        if isinstance(raw, dict):
            return {"required": True, **raw}  # a mapping asks for approval unless it says otherwise
        if isinstance(raw, str | int | float | list):
            raise problem("must be 'none', 'required' or {required, branches, expires_after}")
        return raw


#: Where ``deploy`` ships a model: one module each in ``workers/steps/targets/``.
DEPLOY_TARGETS = ("local", "command")


@dataclass(frozen=True, config=STRICT)
class DeployConfig:
    target: Annotated[str, one_of(DEPLOY_TARGETS)] = "local"
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    command: NonEmpty | None = None
    health_path: NonEmpty = Field(default="/healthz", alias="health")
    #: Share of the gateway's traffic the new release gets on trial; 0 promotes it at once.
    canary_percent: Annotated[StrictInt, _span(0, 100), _whole(0, 100)] = 0
    #: How long the trial watches the canary before its verdict.
    canary_window_seconds: Annotated[StrictFloat, _span(1, 3600)] = 30.0
    #: Roll back when more of the canary's requests than this fail (5xx or no answer) …
    max_error_rate: Annotated[StrictFloat, _span(0, 1)] = 0.05
    #: … or when its p99 latency (through the gateway) is above this …
    max_p99_ms: Annotated[StrictFloat, _span(1, 600_000)] = 500.0
    #: … or when fewer requests than this reached it in the window: not enough to judge.
    min_requests: Annotated[StrictInt, _span(0, 10**9), _whole(0, 10**9)] = 20


@dataclass(frozen=True, config=STRICT)
class Threshold:
    """Absolute bounds for one metric: the candidate must be ``>= min`` and ``<= max``."""

    min: StrictFloat | None = None
    max: StrictFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _either_or_both(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and (not raw or set(raw) - {"min", "max"}):
            raise problem("expected {min: number, max: number} (either or both)")
        return raw

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise problem(f"min {self.min} is above max {self.max}")
        return self


def _pairs(value: Any) -> Any:
    return dict(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, config=STRICT)
class GateConfig:
    """The evaluation gate. ``metric`` (higher is better) is the one compared with production;
    ``thresholds`` bound any metric of the metrics file, ``metric`` included (``min``/``max``)."""

    metric: NonEmpty = "accuracy"
    min: StrictFloat | None = None
    max_drop_vs_production: (
        Annotated[StrictFloat, check(lambda v: v >= 0, "expected a number >= 0")] | None
    ) = None
    #: By metric name (``((name, Threshold), ...)`` pairs are accepted too).
    thresholds: Annotated[dict[str, Threshold], BeforeValidator(_pairs)] = Field(default_factory=dict)
    #: Evaluates the production artifact on this run's held-out data (``LOOPLINE_MODEL_PATH`` in,
    #: ``LOOPLINE_METRICS_OUT`` out); ``None``: the DVC stage that writes the metrics file.
    compare: NonEmpty | None = None

    def bounds(self) -> tuple[tuple[str, Threshold], ...]:
        """Every absolute bound, the single-metric ``min`` first."""
        head = ((self.metric, Threshold(min=self.min)),) if self.min is not None else ()
        return head + tuple(self.thresholds.items())


@dataclass(frozen=True, config=STRICT)
class ReleaseConfig:
    """Which tags release: a tag matching ``tags`` on a deploy branch's commit re-deploys the
    model registered for that commit, without retraining."""

    tags: Globs = ("**",)  # globs over the tag name; the default: any tag

    def releases(self, tag: str) -> bool:
        return any(glob_regex(pattern).match(tag) for pattern in self.tags)


Share = Annotated[StrictFloat, _span(0, 1)]


@dataclass(frozen=True, config=STRICT)
class DriftLimits:
    """A feature has drifted when its PSI is above ``psi`` *and* its test's p-value (adjusted for
    the number of columns tested) is below ``ks_pvalue`` (numbers) or ``chi2_pvalue`` (categories)."""

    psi: Annotated[StrictFloat, check(lambda v: v > 0, "expected a number > 0")] = 0.2
    ks_pvalue: Share = 0.01
    chi2_pvalue: Share = 0.01


@dataclass(frozen=True, config=STRICT)
class DataValidation:
    """``data.validate``: what ``validate_data`` lets through, against the serving model's data."""

    #: Share of missing values allowed in any column.
    max_missing: Share = 0.01
    #: Share of a numeric column's values allowed outside the training data's [min, max].
    max_out_of_range: Share = 0.05
    min_rows: Annotated[StrictInt, _span(0, 10**12), _whole(0, 10**12)] = 1
    drift: DriftLimits = Field(default_factory=DriftLimits)


def _cron(value: str) -> bool:
    return len(value.split()) == 5 and croniter.is_valid(value)


def _zone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ValueError, KeyError):  # a malformed name; ZoneInfoNotFoundError is a KeyError
        return False
    return True


@dataclass(frozen=True, config=STRICT)
class ScheduleTrigger:
    """``triggers.schedule``: retrain on a five-field cron expression, read in ``timezone``."""

    cron: Annotated[NonEmpty, check(_cron, "expected a five-field cron expression such as '0 3 * * 1'")]
    timezone: Annotated[NonEmpty, check(_zone, "expected an IANA time zone such as Europe/Berlin")] = "UTC"


@dataclass(frozen=True, config=STRICT)
class DriftTrigger:
    """``triggers.drift``: retrain when the serving model's live inputs (or predicted labels)
    drift from its training data by more than ``threshold`` (PSI) on at least ``min_samples``."""

    threshold: Annotated[StrictFloat, _span(0.001, 100)] = 0.2
    min_samples: Annotated[StrictInt, _span(1, 10**6), _whole(1, 10**6)] = 500
    #: Share of the gateway's requests whose inputs are kept for the comparison.
    sample_rate: Annotated[StrictFloat, _span(0, 1)] = 0.1
    #: After a fire, quiet for this long: one drift episode is one run.
    cooldown: Duration = 6 * 3600.0
    #: The newest sampled instances compared (at most).
    window: Annotated[StrictInt, _span(1, 10**6), _whole(1, 10**6)] = 2000
    #: The training data's label column (what the model predicts): compared with the predicted
    #: labels, and left out when list instances are matched to the columns by position. Unset:
    #: the one column the instances lack (the last one, for list instances).
    label: NonEmpty | None = None


@dataclass(frozen=True, config=STRICT)
class VolumeTrigger:
    """``triggers.volume``: retrain once this many rows landed since the serving model's data."""

    min_new_rows: Annotated[StrictInt, _span(1, 10**12), _whole(1, 10**12)]


@dataclass(frozen=True, config=STRICT)
class PerformanceTrigger:
    """``triggers.performance``: retrain when online accuracy (from the clients' feedback) over
    the newest ``window`` labelled predictions falls below ``min``."""

    min: Annotated[StrictFloat, _span(0, 1)]
    metric: Annotated[str, one_of(("accuracy",), "metric must be")] = "accuracy"
    window: Annotated[StrictInt, _span(1, 10**6), _whole(1, 10**6)] = 1000
    cooldown: Duration = 6 * 3600.0


@dataclass(frozen=True, config=STRICT)
class Triggers:
    """``triggers:``: what starts a run besides pushes and data (each absent one is off)."""

    schedule: ScheduleTrigger | None = None
    drift: DriftTrigger | None = None
    volume: VolumeTrigger | None = None
    performance: PerformanceTrigger | None = None


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    """A project's own ``loopline.yml``, as the workers use it; every key is optional."""

    model_name: str = "model"
    artifact: str = "models/model.pkl"
    metrics: str = "metrics.json"
    rules: tuple[Rule, ...] = ()  # in order; first match wins
    stages: dict[str, str] = dataclasses.field(default_factory=dict)
    deploy: DeployConfig = dataclasses.field(default_factory=DeployConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    data_into: str = "data/raw"
    debounce_seconds: float = 30.0
    data_validate: DataValidation = dataclasses.field(default_factory=DataValidation)
    release: ReleaseConfig = dataclasses.field(default_factory=ReleaseConfig)
    #: What its commands run with (built by uv) and the sandbox's network switch and limits.
    environment: EnvironmentConfig = dataclasses.field(default_factory=EnvironmentConfig)
    sandbox: SandboxConfig = dataclasses.field(default_factory=SandboxConfig)
    triggers: Triggers = dataclasses.field(default_factory=Triggers)


# The file's own sections, as written; parse_project_config flattens them into ProjectConfig.


@dataclass(frozen=True, config=STRICT)
class _Model:
    name: NonEmpty = "model"
    artifact: InRepo = "models/model.pkl"
    metrics: InRepo = "metrics.json"


@dataclass(frozen=True, config=STRICT)
class _Stages:
    unit_tests: NonEmpty = DEFAULT_STAGES["unit_tests"]
    retrain: NonEmpty = DEFAULT_STAGES["retrain"]
    integration_tests: NonEmpty = DEFAULT_STAGES["integration_tests"]
    deploy: DeployConfig = Field(default_factory=DeployConfig)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, raw: Any) -> Any:
        for name in raw if isinstance(raw, dict) else ():
            if name not in (*DEFAULT_STAGES, "deploy"):
                raise problem("unknown stage", at=str(name))
        return raw


@dataclass(frozen=True, config=STRICT)
class _Data:
    into: InRepo = "data/raw"
    debounce_seconds: Annotated[StrictFloat, _span(0, 3600, " seconds")] = 30.0
    validate: DataValidation = Field(default_factory=DataValidation)


@dataclass(frozen=True, config=STRICT)
class _ProjectFile:
    model: _Model = Field(default_factory=_Model)
    classify: dict[Kind, Globs] = Field(default_factory=dict)
    stages: _Stages = Field(default_factory=_Stages)
    gate: GateConfig = Field(default_factory=GateConfig)
    data: _Data = Field(default_factory=_Data)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    triggers: Triggers = Field(default_factory=Triggers)


def parse_project_config(
    raw: Any, source: str = "loopline.yml", *, dvc: Any = None, dvc_files: tuple[str, ...] = ()
) -> ProjectConfig:
    """Parse a project's ``loopline.yml`` (``raw`` is the loaded YAML, ``None`` if absent).

    :param dvc: the parsed ``dvc.yaml`` at the same commit, if any: without a ``classify:``
        section the rules are derived from it (:func:`pipelines.rules.dvc_rules`).
    :param dvc_files: the ``.dvc`` files at that commit (data tracked by DVC).
    """
    file = load(_ProjectFile, raw, source)
    rules = tuple(
        Rule(kind, glob, f"classify.{kind}[{i}]: {glob}")
        for kind, globs in file.classify.items()
        for i, glob in enumerate(globs)
    )
    stages = file.stages
    return ProjectConfig(
        model_name=file.model.name,
        artifact=file.model.artifact,
        metrics=file.model.metrics,
        rules=rules or default_rules(dvc, dvc_files),
        stages={name: getattr(stages, name) for name in DEFAULT_STAGES},
        deploy=stages.deploy,
        gate=file.gate,
        data_into=file.data.into,
        debounce_seconds=file.data.debounce_seconds,
        data_validate=file.data.validate,
        release=file.release,
        environment=file.environment,
        sandbox=file.sandbox,
        triggers=file.triggers,
    )
