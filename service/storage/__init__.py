"""Object-storage notifications, one module per sender: ``s3`` (AWS S3 and MinIO, bare or in an
SQS, SNS or EventBridge envelope), ``azure`` (Event Grid) and ``cloudevents``.

Each offers a pure ``parse(headers, body) -> Notification``. A parser raises
:class:`~pipelines.events.PayloadError` for a malformed body and
:class:`~pipelines.events.Ignored` for a body that as a whole asks for nothing (a test event, a
validation handshake); records it understands but does not act on are listed in ``skipped``.
"""

from __future__ import annotations

from types import ModuleType

from service.storage import azure, cloudevents, s3
from service.storage.base import Notification

PARSERS: dict[str, ModuleType] = {"s3": s3, "azure": azure, "cloudevents": cloudevents}

__all__ = ["PARSERS", "Notification"]
