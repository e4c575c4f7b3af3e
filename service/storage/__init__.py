"""Object-storage notifications, one module per sender: ``s3`` (AWS S3 and MinIO, bare or in an
SQS, SNS or EventBridge envelope), ``azure`` (Event Grid) and ``cloudevents``.

Each offers a pure ``parse(headers, body) -> Notification`` and ``HANDSHAKE`` (see
:class:`~service.storage.base.Sender`); ``/events/<sender>`` routes by :data:`PARSERS`, so adding
a sender is a module here plus its entry below. A parser raises
:class:`~pipelines.events.PayloadError` for a malformed body and
:class:`~pipelines.events.Ignored` for a body that as a whole asks for nothing (a test event, a
validation handshake); records it understands but does not act on are listed in ``skipped``.
"""

from __future__ import annotations

from service.storage import azure, cloudevents, s3
from service.storage.base import Notification, Sender

PARSERS: dict[str, Sender] = {"s3": s3, "azure": azure, "cloudevents": cloudevents}

__all__ = ["PARSERS", "Notification"]
