"""Where events enter: the ``acp:groq_queue`` subscriber and the InsightCreated publisher.

Thin on purpose: the parser reads both wire formats, pydantic validates the event, and
``InsightService`` decides everything else. An entry that is not a valid event never
reaches ``handle_audit_event``: its ``InvalidEvent`` (or pydantic's ``ValidationError``)
is caught by the exception handler registered here and the entry is dead-lettered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream import AckPolicy
from faststream.middlewares import ExceptionMiddleware
from faststream.redis import RedisRouter, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from faststream.redis.message import bDATA_KEY
from faststream.redis.publisher.usecase import StreamPublisher
from pydantic import ValidationError

from app.adapters.redis_store import INSIGHT_STREAM_MAXLEN, EntryRef, Keys
from app.domain.errors import InvalidEvent
from app.domain.events import EVENT_ID_PATTERN, TENANT_ID_PATTERN, AuditEvent
from app.domain.insights import InsightCreated
from app.service import InsightService
from app.settings import Settings

__all__ = [
    "INVALID_HEADER",
    "declare_insights_publisher",
    "describe_validation_error",
    "entry_parser",
    "register_event_handlers",
]

PAYLOAD_FIELD = b"payload"
EVENT_ID = re.compile(EVENT_ID_PATTERN)
TENANT_ID = re.compile(TENANT_ID_PATTERN)
INVALID_HEADER = "x-acp-invalid"

_INBOUND_DESCRIPTION = """\
Audit events of the gateway, one per decision about an agent's tool call.

A gateway that is not a FastStream app writes the event JSON into a field named `payload`:

    XADD acp:groq_queue * payload '{"event_id": "evt-1", "tenant_id": "acme", ...}'

Entries published by a FastStream publisher (`__data__`) are accepted too. Each event ends in
exactly one outcome: `enriched` (insight written to `acp:groq:insight:{event_id}`),
`duplicate`, `rate_limited` or `dead_lettered` (pushed on `acp:groq:dlq` with its reason).
"""

_OUTBOUND_DESCRIPTION = """\
One message per insight written. The insight itself is at `insight_key`
(`acp:groq:insight:{event_id}`, TTL 24 h); the stream keeps about the newest 10,000 messages.
"""


def _entry_size(fields: Mapping[bytes, bytes]) -> int:
    return sum(len(key) + len(value) for key, value in fields.items())


def entry_parser(max_event_bytes: int) -> Callable[..., Awaitable[Any]]:
    """A parser for both wire formats; what fits neither is marked invalid, not raised.

    * the gateway's ``XADD <stream> * payload '<json>'``: the body is the payload as is
      (FastStream's parser would take a top-level ``data`` key for an envelope);
    * FastStream's own ``__data__`` format: its parser, unchanged.
    """

    async def parse_entry(raw: Any, default_parser: Callable[[Any], Awaitable[Any]]) -> Any:
        fields: Mapping[bytes, bytes] = raw["data"]
        problem: str | None = None
        if _entry_size(fields) > max_event_bytes:
            problem = f"entry is larger than MAX_EVENT_BYTES ({max_event_bytes} bytes)"
        elif PAYLOAD_FIELD not in fields:
            if bDATA_KEY in fields:
                return await default_parser(raw)
            names = ", ".join(sorted(k.decode("utf-8", "replace") for k in fields)) or "none"
            problem = (
                f"entry has no 'payload' field and is not a FastStream message (fields: {names})"
            )
        message = await default_parser({**raw, "data": {}})
        message.raw_message = raw
        message.body = b"" if problem else fields[PAYLOAD_FIELD]
        if problem:
            message.headers[INVALID_HEADER] = problem
        return message

    return parse_entry


async def decode_entry(message: Any, default_decoder: Callable[[Any], Awaitable[Any]]) -> Any:
    """The entry's body as a JSON object, or ``InvalidEvent`` saying why it is not one."""
    problem = message.headers.get(INVALID_HEADER)
    if problem:
        raise InvalidEvent(problem)
    try:
        body = json.loads(message.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidEvent(f"payload is JSON but not an object (got {type(body).__name__})")
    return body


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as one readable line, naming each field (never echoing input)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error["loc"] if part not in {"event", "body"}]
        name = ".".join(location) or "event"
        parts.append(f"{name}: {error['msg']}")
    return "; ".join(parts)


def _ids_of(body: object) -> tuple[str | None, str | None]:
    """Event and tenant ids of a rejected body, only when they match their patterns."""
    if not isinstance(body, dict):
        return None, None
    event_id, tenant_id = body.get("event_id"), body.get("tenant_id")
    return (
        event_id if isinstance(event_id, str) and EVENT_ID.fullmatch(event_id) else None,
        tenant_id if isinstance(tenant_id, str) and TENANT_ID.fullmatch(tenant_id) else None,
    )


def entry_ref(message: Any, *, stream: str, group: str) -> EntryRef:
    # FastStream's in-memory TestRedisBroker has no stream ids: its message id stands in.
    entry_id = (message.raw_message.get("message_ids") or [message.message_id])[0]
    return EntryRef(
        stream=stream,
        group=group,
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
    )


def declare_insights_publisher(router: RedisRouter) -> StreamPublisher:
    """The InsightCreated publisher on ``acp:groq:insights:stream`` (MAXLEN ~ 10,000)."""
    return router.publisher(
        stream=StreamSub(Keys.INSIGHTS_STREAM, maxlen=INSIGHT_STREAM_MAXLEN),
        title=f"{Keys.INSIGHTS_STREAM}:publish",
        description=_OUTBOUND_DESCRIPTION,
        schema=InsightCreated,
    )


def register_event_handlers(
    router: RedisRouter,
    *,
    settings: Settings,
    service: InsightService,
    errors: ExceptionMiddleware,
) -> None:
    """Declare the inbound subscriber; ``errors`` (on the router) dead-letters bad entries."""
    stream, group = settings.insight_stream, settings.insight_group

    subscriber = router.subscriber(
        stream=StreamSub(
            stream,
            group=group,
            consumer=settings.worker_id,
            max_records=settings.read_count,
            polling_interval=settings.read_block_ms,
        ),
        max_workers=settings.worker_concurrency,
        ack_policy=AckPolicy.MANUAL,
        parser=entry_parser(settings.max_event_bytes),
        decoder=decode_entry,
        title=f"{stream}:consume",
        description=_INBOUND_DESCRIPTION,
    )
    # The document describes every worker, so it names the setting, not this process.
    subscriber.specification.stream_sub = StreamSub(  # type: ignore[attr-defined]
        stream, group=group, consumer="${WORKER_ID}"
    )

    @subscriber
    async def handle_audit_event(event: AuditEvent, message: RedisStreamMessage) -> None:
        """Enrich one audit event; the service acks the entry with its writes."""
        await service.process(
            event,
            entry_ref(message, stream=stream, group=group),
            message.raw_message["data"],
        )

    @errors.add_handler(InvalidEvent)
    @errors.add_handler(ValidationError)
    async def dead_letter_invalid(exc: Exception, message: RedisStreamMessage) -> None:
        if isinstance(exc, ValidationError):
            body = _safe_body(message)
            event_id, tenant_id = _ids_of(body)
            error = InvalidEvent(
                describe_validation_error(exc), event_id=event_id, tenant_id=tenant_id
            )
        else:
            error = exc if isinstance(exc, InvalidEvent) else InvalidEvent(str(exc))
        await service.reject(
            entry_ref(message, stream=stream, group=group),
            message.raw_message["data"],
            error,
            payload=message.body or None,
        )


def _safe_body(message: Any) -> object:
    try:
        return json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        return None
