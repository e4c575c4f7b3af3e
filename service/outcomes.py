"""The gateway's memory of its answers: a request id per prediction (for feedback) and a sample
of request inputs (for the live drift check).

On the request path only a uuid, a random draw and a list append (``bench/sampling.py``); the
gateway's flush thread parses the sampled bodies and stores everything in batches
(:mod:`store.outcomes`), and refreshes each model's sample rate from the store.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid

from store import outcomes
from store.db import Database
from store.outcomes import Predicted, Sampled

log = logging.getLogger(__name__)

HEADER = "X-Loopline-Request-Id"
#: Unflushed answers kept in memory while the store is down; older ones are forgotten.
MAX_PENDING = 100_000
#: Instances kept from one sampled request.
MAX_INSTANCES = 100
#: Flushes between two refreshes of the sample rates, and between two prunes.
RATES_EVERY, PRUNE_EVERY = 5, 60


class Outcomes:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._predicted: list[Predicted] = []
        self._sampled: list[tuple[str, int, bytes, tuple[str, ...]]] = []
        self.rates: dict[str, float] = {}
        self._flushes = 0

    def note(self, model: str, release: int, labels: list[str], body: bytes) -> str:
        """Remember one prediction (and maybe its inputs); returns its request id."""
        request_id = uuid.uuid4().hex
        predicted = Predicted(request_id, model, release, tuple(labels))
        rate = self.rates.get(model)
        with self._lock:
            self._predicted.append(predicted)
            if rate and random.random() < rate:
                self._sampled.append((model, release, body, predicted.labels))
        return request_id

    def flush(self) -> None:
        """Store what was noted since the last flush (called by the gateway's flush thread)."""
        with self._lock:
            predicted, self._predicted = self._predicted, []
            raw, self._sampled = self._sampled, []
        sampled = [s for s in map(_sample, raw) if s is not None]
        try:
            outcomes.add(self.db, predicted, sampled)
        except Exception:
            log.exception("gateway outcomes: flush failed; retrying with the next one")
            with self._lock:
                self._predicted[:0] = predicted[-MAX_PENDING:]
                del self._predicted[:-MAX_PENDING]
            return
        self._flushes += 1
        try:
            if self._flushes % RATES_EVERY == 1:
                self.rates = outcomes.rates(self.db)
            if self._flushes % PRUNE_EVERY == 0:
                outcomes.prune(self.db)
        except Exception:
            log.exception("gateway outcomes: reading sample rates or pruning failed")


def _sample(raw: tuple[str, int, bytes, tuple[str, ...]]) -> Sampled | None:
    """The instances of a sampled request body (``{"instances": [...]}``), if it has any."""
    model, release, body, labels = raw
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        return None
    return Sampled(model, release, instances[:MAX_INSTANCES], labels[:MAX_INSTANCES])
