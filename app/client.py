"""For gateway code in Python: write an audit event the way the worker reads it.

    from redis.asyncio import Redis
    from app.client import publish_event

    entry_id = await publish_event(redis, {"event_id": "evt-1", "tenant_id": "acme", ...})

``publish_event`` validates the event with the worker's own model (``AuditEvent``) and the
worker's own reading of an entry, then writes ``XADD acp:groq_queue * payload '<json>'``,
the gateway's wire format that the AsyncAPI document describes. An event the worker would
dead-letter as ``invalid`` is refused with ``InvalidEvent`` before anything reaches Redis.
``entry_fields`` gives the validated fields for code that writes the entry itself (a sync
client, a pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json

from app.domain.errors import InvalidEvent
from app.domain.events import AuditEvent, describe_validation_error, rejected_event
from app.domain.text import as_text
from app.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_STREAM", "MAX_EVENT_BYTES", "InvalidEvent", "entry_fields", "publish_event"]

DEFAULT_STREAM: str = Settings.model_fields["insight_stream"].default
MAX_EVENT_BYTES: int = Settings.model_fields["max_event_bytes"].default
PAYLOAD_FIELD = "payload"


def entry_fields(
    event: AuditEvent | Mapping[str, Any], *, max_event_bytes: int = MAX_EVENT_BYTES
) -> dict[str, bytes]:
    """The stream entry for ``event``: ``{"payload": <event JSON>}``, or ``InvalidEvent``.

    A mapping is written as given (extra fields such as ``raw_input`` included; dates as
    RFC 3339); an ``AuditEvent`` as its fields that were set. The JSON is then read back the
    way the worker reads it, so what passes here is what the worker accepts.
    """
    if isinstance(event, AuditEvent):
        body: object = event.model_dump(mode="json", exclude_unset=True)
    elif isinstance(event, Mapping):
        body = dict(event)
    else:
        raise InvalidEvent(f"an event is a mapping or an AuditEvent, not {type(event).__name__}")
    try:
        payload = to_json(body)
    except PydanticSerializationError as exc:
        raise InvalidEvent(f"event is not JSON-serializable: {exc}") from None
    size = len(PAYLOAD_FIELD) + len(payload)
    if size > max_event_bytes:
        raise rejected_event(
            f"entry is larger than MAX_EVENT_BYTES ({size} > {max_event_bytes} bytes)", body
        )
    try:
        AuditEvent.model_validate(json.loads(payload))
    except ValidationError as exc:
        raise rejected_event(describe_validation_error(exc), body) from None
    return {PAYLOAD_FIELD: payload}


async def publish_event(
    redis: Redis,
    event: AuditEvent | Mapping[str, Any],
    *,
    stream: str = DEFAULT_STREAM,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> str:
    """Validate ``event`` and XADD it to ``stream`` as ``payload '<json>'``; the entry id.

    Raises ``InvalidEvent`` (naming each offending field, never echoing its value) before
    touching Redis when the worker would not accept the event.
    """
    payload = entry_fields(event, max_event_bytes=max_event_bytes)[PAYLOAD_FIELD]
    entry_id = await redis.xadd(stream, {PAYLOAD_FIELD: payload})
    return as_text(entry_id)
