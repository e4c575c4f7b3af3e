"""What happened to the gateway's answers: predictions by request id with the true labels clients
sent back (online accuracy per release), and sampled request inputs (live drift).

The gateway writes both in batches from its flush thread, never per request. Each is bounded per
model (:data:`MAX_PREDICTIONS`, :data:`MAX_SAMPLES`): the oldest rows go first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from store import telemetry
from store.db import Database
from store.models import InputSample, ModelSampling, Prediction, utcnow

#: Predictions kept per model for feedback: a true label arriving later than this many
#: predictions after its request finds nothing (answered as ``unknown``).
MAX_PREDICTIONS = 200_000
#: Sampled requests kept per model: more than any drift window needs.
MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class Predicted:
    request_id: str
    model: str
    release: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Sampled:
    model: str
    release: int
    instances: list[Any]
    labels: tuple[str, ...]


def add(db: Database, predicted: Sequence[Predicted], sampled: Sequence[Sampled]) -> None:
    """Store a flush's predictions and samples (one transaction each kind, bulk inserts)."""
    now = utcnow()
    with db.session() as s:
        if predicted:
            s.execute(
                insert(Prediction),
                [
                    {
                        "request_id": p.request_id,
                        "model_name": p.model,
                        "deployment_id": p.release,
                        "labels": list(p.labels),
                        "created_at": now,
                    }
                    for p in predicted
                ],
            )
        if sampled:
            s.execute(
                insert(InputSample),
                [
                    {
                        "model_name": x.model,
                        "deployment_id": x.release,
                        "instances": x.instances,
                        "labels": list(x.labels),
                        "created_at": now,
                    }
                    for x in sampled
                ],
            )


def prune(db: Database) -> None:
    """Keep the newest :data:`MAX_PREDICTIONS` predictions and :data:`MAX_SAMPLES` samples of each
    model (by id: one indexed range delete per model and table)."""
    with db.session() as s:
        for table, keep in ((Prediction, MAX_PREDICTIONS), (InputSample, MAX_SAMPLES)):
            for model, newest in s.execute(
                select(table.model_name, func.max(table.id)).group_by(table.model_name)
            ):
                s.execute(delete(table).where(table.model_name == model, table.id <= newest - keep))


@dataclass
class FeedbackResult:
    recorded: int = 0
    unknown: list[str] | None = None
    duplicate: list[str] | None = None
    mismatched: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "unknown": self.unknown or [],
            "duplicate": self.duplicate or [],
            "mismatched": self.mismatched or [],
        }


def feedback(db: Database, model: str, truths: dict[str, tuple[str, ...]]) -> FeedbackResult:
    """Record the true labels of requests (request id → one label per predicted instance).

    Each request counts once: a second feedback for it is a ``duplicate``; an id the gateway never
    gave (or pruned) is ``unknown``; a number of labels other than the predictions' is ``mismatched``.
    Matches are added to the release's telemetry (``outcomes``: ``labelled``, ``correct``).
    """
    result = FeedbackResult(unknown=[], duplicate=[], mismatched=[])
    assert result.unknown is not None and result.duplicate is not None and result.mismatched is not None
    deltas: dict[tuple[int, str, str], int] = {}
    now = utcnow()
    with db.session() as s:
        rows = {
            p.request_id: p
            for p in s.scalars(
                select(Prediction).where(Prediction.model_name == model, Prediction.request_id.in_(truths))
            )
        }
        for request_id, truth in sorted(truths.items()):  # one lock order for every feedback
            row = rows.get(request_id)
            if row is None:
                result.unknown.append(request_id)
                continue
            if len(truth) != len(row.labels):
                result.mismatched.append(request_id)
                continue
            correct = sum(t == p for t, p in zip(truth, row.labels, strict=True))
            # conditional: two feedbacks for one request racing in two workers count once
            claimed = s.execute(
                update(Prediction)
                .where(Prediction.id == row.id, Prediction.feedback_at.is_(None))
                .values(labelled=len(truth), correct=correct, feedback_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                result.duplicate.append(request_id)
                continue
            result.recorded += 1
            for key, amount in (("labelled", len(truth)), ("correct", correct)):
                deltas[row.deployment_id, "outcomes", key] = (
                    deltas.get((row.deployment_id, "outcomes", key), 0) + amount
                )
        telemetry.add_in(s, deltas, time.time())
    return result


def window_accuracy(db: Database, release: int, window: int) -> tuple[int, int]:
    """(correct, labelled) over the release's newest labelled requests holding ``window`` instances."""
    correct = labelled = 0
    with db.session() as s:
        rows = s.execute(
            select(Prediction.correct, Prediction.labelled)
            .where(Prediction.deployment_id == release, Prediction.feedback_at.is_not(None))
            .order_by(Prediction.feedback_at.desc(), Prediction.id.desc())
            .limit(window)
        )
        for right, seen in rows:
            if labelled >= window:
                break
            correct, labelled = correct + (right or 0), labelled + (seen or 0)
    return correct, labelled


def samples(db: Database, model: str, release: int, since: datetime, limit: int) -> list[InputSample]:
    """The release's newest sampled requests since ``since`` (at most ``limit``), oldest first."""
    with db.session() as s:
        rows = list(
            s.scalars(
                select(InputSample)
                .where(
                    InputSample.model_name == model,
                    InputSample.deployment_id == release,
                    InputSample.created_at >= since,
                )
                .order_by(InputSample.id.desc())
                .limit(limit)
            )
        )
    return rows[::-1]


def window(db: Database, release: int, instances: int) -> tuple[list[Any], list[str | None], int | None]:
    """The release's newest sampled instances (at most ``instances``, oldest first), the label
    predicted for each (None where the answer had not one per instance), and the newest sample's
    id (None: nothing sampled)."""
    found: list[Any] = []
    labels: list[str | None] = []
    newest: int | None = None
    with db.session() as s:
        rows = s.execute(
            select(InputSample.id, InputSample.instances, InputSample.labels)
            .where(InputSample.deployment_id == release)
            .order_by(InputSample.id.desc())
            .limit(instances)  # a sample holds at least one instance
        )
        for sample_id, kept, predicted in rows:
            newest = sample_id if newest is None else newest
            kept = list(kept or [])[: instances - len(found)]
            aligned = predicted if predicted and len(predicted) >= len(kept) else [None] * len(kept)
            found[:0], labels[:0] = kept, list(aligned[: len(kept)])
            if len(found) >= instances:
                break
    return found, labels, newest


def set_rates(db: Database, rates: dict[str, float]) -> None:
    """Each model's sample rate (0 stops sampling); models not named keep theirs."""
    if not rates:
        return
    with db.session() as s:
        for model, rate in rates.items():
            row = s.get(ModelSampling, model)
            if row is None:
                s.add(ModelSampling(model_name=model, rate=rate, updated_at=utcnow()))
            elif row.rate != rate:
                row.rate, row.updated_at = rate, utcnow()


def rates(db: Database, models: Iterable[str] | None = None) -> dict[str, float]:
    with db.session() as s:
        query = select(ModelSampling.model_name, ModelSampling.rate)
        if models is not None:
            query = query.where(ModelSampling.model_name.in_(list(models)))
        return {m: r for m, r in s.execute(query)}
