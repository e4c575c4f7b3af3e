"""Durable records: deliveries (the outbox), runs, stages, model versions, deployments."""

from store.db import Database, StoreUnavailable

__all__ = ["Database", "StoreUnavailable"]
