"""SQLAlchemy models; the Alembic migrations in ``store/migrations`` create the same schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from store.clock import as_utc, utcnow  # noqa: F401 (as_utc: where callers found it before store.clock)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Delivery(Base):
    """One accepted webhook or storage event: the outbox row the relay publishes from."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("provider", "delivery_id", name="uq_delivery"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str] = mapped_column(String(64))
    event: Mapped[dict[str, Any]]
    # pending → dispatched → processed | failed
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    #: Intakes started for it: one that kills its worker again and again fails after a few.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("dedupe_key", name="uq_run_dedupe"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(64), index=True)
    ref: Mapped[str | None] = mapped_column(String(255))
    commit: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))  # push | tag | data
    kinds: Mapped[list[Any]] = mapped_column(default=list)
    classification: Mapped[dict[str, Any] | None]
    plan: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    reason: Mapped[str | None] = mapped_column(Text)
    workspace: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(String(400))
    model_version: Mapped[int | None]
    #: Set by a retry; the relay then publishes its ``prepare`` (a worktree), and its stages are due.
    resume_requested_at: Mapped[datetime | None] = mapped_column(index=True)
    #: 1 for the run a delivery made; a retry is the next attempt of the run it retries.
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    #: The newer run of the branch that cancelled this one (a smaller id: this run came late).
    superseded_by: Mapped[int | None]
    #: The repository's dataset version this run trains on (``store/datasets.py``): the one
    #: current when it was planned, or the one its data landed as; a retry keeps its original's.
    #: 0: nothing landed yet (the repository's own files only).
    dataset_version: Mapped[int | None]
    #: The commit's message and author (from git at intake), for a list people can scan.
    message: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(200))
    #: The run status last sent to the Git host as a commit status.
    reported_status: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    stages: Mapped[list[Stage]] = relationship(order_by="Stage.position", back_populates="run")
    deliveries: Mapped[list[Delivery]] = relationship(order_by="Delivery.received_at", viewonly=True)


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    #: Times a worker started it (a worker that died leaves it to the next attempt).
    attempt: Mapped[int] = mapped_column(default=0, server_default="0")
    #: The message that may run it (a redelivered older one is stale) and when it was sent;
    #: ``published_at`` None on a queued stage of a running run: due, not yet published.
    task_id: Mapped[str | None] = mapped_column(String(64))
    published_at: Mapped[datetime | None]
    #: ``host:pid`` of the worker running it, renewed by its heartbeat until ``lease_expires_at``.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    #: Process group of the command it runs: killed when its worker died and it is taken over.
    pgid: Mapped[int | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    #: Running: the tail its worker copies in (workers/livelog.py); ended: the last part, the
    #: whole log being the object ``log_object`` names in object storage (store/stagelogs.py).
    log: Mapped[str] = mapped_column(Text, default="")
    log_object: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any] | None]

    run: Mapped[Run] = relationship(back_populates="stages")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    repository: Mapped[str] = mapped_column(String(64))
    commit: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(255))
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_message: Mapped[str | None] = mapped_column(Text)
    #: The delivery (``/api/events/<id>``) that started the run which trained this version.
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    #: The evaluation gate's verdict and every check it made.
    gate: Mapped[dict[str, Any] | None]
    data_version: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    artifact_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    #: The training data: dataset version, its manifest sha256 and every file under data.into.
    dataset: Mapped[dict[str, Any] | None]
    #: Per column of the training data: type, missing share, range, histogram, categories.
    profile: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """One immutable version of a repository's landed data: the manifest of every object that
    landed and was not removed since, by its path under ``data.into``."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("repository", "number", name="uq_dataset_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int]
    parent: Mapped[int]
    #: ``[{"path", "sha256", "size", "rows", "source", "landed_at", "delivery_id"}]`` by path.
    manifest: Mapped[list[Any]]
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    #: What made it: ``{"kind": "data"|"removal", "deliveries", "added", "removed", "replaced"}``.
    trigger: Mapped[dict[str, Any]]
    #: The data run this version landed for (None: removals only, which start no run).
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LakeObject(Base):
    """The newest storage event seen for one object (by its hex sequencer, left-padded to 64 so
    that string order is AWS's order): an older event arriving late cannot override it."""

    __tablename__ = "lake_objects"

    #: sha256 of store, account, bucket and key (keys may be 1 KiB: too long for an index)
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequencer: Mapped[str] = mapped_column(String(64))


#: Release states whose process runs: production, a canary on trial, the standby for a rollback.
LIVE_RELEASES = ("active", "canary", "standby")


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    target: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None]
    release_dir: Mapped[str | None] = mapped_column(Text)
    #: The host whose process serves it (``settings.host``): only that host starts or stops it.
    host: Mapped[str | None] = mapped_column(String(255))
    #: The release directory as a tar in object storage: any serving host can start it again.
    bundle_sha256: Mapped[str | None] = mapped_column(String(64))
    #: active (production, stable) | canary (on trial) | standby (the previous production, kept
    #: running for an instant rollback) | retired | failed (a canary rolled back); see store/releases.py
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: Share of the gateway's requests for this model (``/serve/<model>/…``) this release gets.
    traffic_percent: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Its latest move to another host, in one line ("moved from host a to host b: …"), if any.
    moved: Mapped[str | None] = mapped_column(Text)


class ModelAlias(Base):
    """Where one alias of a model points: ``candidate``, ``staging`` or ``production``."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_name", "alias", name="uq_model_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(16))
    version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """Every move of an alias, with who moved it (``run:<id>``, ``user:<name>``, ``canary:auto``)."""

    __tablename__ = "alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[int | None]
    to_version: Mapped[int]
    actor: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReleaseMetric(Base):
    """One gateway counter of one release, summed over the flushes of every web worker.

    ``series`` is ``requests``, ``errors``, ``latency`` (``key``: the bucket's upper bound in
    seconds, non-cumulative), ``latency_sum_us`` or ``predictions`` (``key``: the label).
    """

    __tablename__ = "release_metrics"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class User(Base):
    """A person who acts through the API or the dashboard; only a digest of the token is kept."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", name="uq_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    #: viewer | approver | admin (see store/users.py)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]


class TriggerState(Base):
    """What one trigger of a repository last did (``store/triggers.py``): a schedule's last handled
    tick, when it last fired (a cooldown counts from there), so a restart neither skips nor repeats."""

    __tablename__ = "trigger_state"

    repository: Mapped[str] = mapped_column(String(64), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: schedule: the newest tick handled (fired or skipped); armed at first sight
    last_tick: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    #: the delivery (``/api/events/<id>``) of the last fire, and why it fired (or was skipped)
    event_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReleaseSample(Base):
    """What the gateway counted for one release in one :data:`store.telemetry.SAMPLE_SECONDS`
    slice: the same series as :class:`ReleaseMetric` (not predictions), over time."""

    __tablename__ = "release_samples"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    #: Start of the slice, in seconds since the epoch.
    at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class RunNotice(Base):
    """A run status that was announced to the notification targets (``store/notices.py``)."""

    __tablename__ = "run_notices"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """One answer of the serving gateway: its request id, the release and the predicted labels,
    and (once the client sent them) how many of the true labels matched. Bounded per model
    (``store/outcomes.py``)."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(32), unique=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    deployment_id: Mapped[int] = mapped_column(index=True)
    labels: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Instances whose true label the client sent, and how many the release predicted right.
    labelled: Mapped[int | None]
    correct: Mapped[int | None]
    feedback_at: Mapped[datetime | None]


class InputSample(Base):
    """Request inputs the gateway sampled (``triggers.drift.sample_rate``) for the drift check:
    the numeric features of each instance, and the labels predicted for them. Bounded per model."""

    __tablename__ = "input_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    deployment_id: Mapped[int]
    instances: Mapped[list[Any]]
    labels: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelSampling(Base):
    """How much of a model's gateway traffic is sampled, written by the trigger check from the
    project's ``triggers.drift.sample_rate`` and read (cached) by every web worker."""

    __tablename__ = "model_sampling"

    model_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    rate: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(Base):
    """A host whose workers run (``LOOPLINE_HOST``), renewed by their heartbeat
    (``store/hosts.py``): a host silent for a lease is lost, and the releases it served are
    started again on a host that ``serves`` (takes the queue the ``deploy`` stage goes to)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    serves: Mapped[bool] = mapped_column(default=False, server_default=false())
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Probe(Base):
    """One row per process kind that proves the store takes writes (``/healthz`` writes its own)."""

    __tablename__ = "probes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Reproduction(Base):
    """One request to rebuild a model version from its lineage (``POST …/reproduce``): the
    outbox row the relay publishes to the training queue, then the worker's lease and result
    (``store/reproductions.py``; statuses in ``store/lifecycle.py``)."""

    __tablename__ = "reproductions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    #: One line: why it failed, or what matched.
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(100))
    #: The request's ``Idempotency-Key``: a repeat answers this reproduction again.
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    #: The message that may run it, and when it was published (None: the relay publishes it).
    task_id: Mapped[str | None] = mapped_column(String(64))
    published_at: Mapped[datetime | None]
    #: ``host:pid`` of the worker rebuilding it, renewed by its heartbeat until it expires.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    #: The rebuild command's process group, killed if its worker dies (on the worker's host).
    pgid: Mapped[int | None]
    #: matches, expected vs got sha256 and metrics, the dataset check, exit code, seconds.
    result: Mapped[dict[str, Any] | None]
    #: The tail of the rebuild's log.
    log: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
