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
from contextvars import ContextVar
from typing import Any, Self, cast

from faststream import AckPolicy
from faststream._internal.endpoint.publisher import PublisherSpecification
from faststream.middlewares import ExceptionMiddleware
from faststream.redis import RedisRouter, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from faststream.redis.message import bDATA_KEY
from faststream.redis.publisher.specification import ListPublisherSpecification
from faststream.redis.publisher.usecase import ListPublisher, StreamPublisher
from faststream.specification.schema.bindings import redis as redis_bindings
from pydantic import ValidationError

from app.adapters.redis_store import INSIGHT_STREAM_MAXLEN, EntryRef, Keys
from app.domain.errors import InvalidEvent
from app.domain.events import EVENT_ID_PATTERN, TENANT_ID_PATTERN, AuditEvent
from app.domain.insights import DeadLetter, InsightCreated
from app.service import InsightService
from app.settings import Settings

__all__ = [
    "INVALID_HEADER",
    "declare_dead_letter_publisher",
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
Audit events of the gateway, one per decision about an AI agent's tool call. The gateway
writes them; every worker process reads them as one consumer (named by its `WORKER_ID`) of
the group `acp_insights_consumer_group`. Deployments may rename the stream with the
worker's setting `INSIGHT_STREAM` (default `acp:groq_queue`).

**How a gateway writes an event.** One stream entry per event, with one field named
`payload` holding the event as a JSON object (UTF-8, the whole entry at most
`MAX_EVENT_BYTES`, 262144 bytes by default). No FastStream is needed, any Redis client does:

<XADD_EXAMPLE>

Python gateways can call `app.client.publish_event(redis, event)`, which validates the event
with the worker's own model first and then writes exactly this. Entries published by a
FastStream publisher (one field `__data__`) are accepted too. Fields the schema does not
list are allowed (`raw_input`, tool arguments, ...): they are kept, and never sent to the
model.

**What happens to an event.** Exactly one outcome each, counted by the metric
`acp_groq_events_consumed_total{result}`; the entry is acknowledged in every case and the
gateway gets no reply. `event_id` is the idempotency key: writing an event twice is safe.

- `enriched`: the insight is written to `acp:groq:insight:{event_id}` (JSON, TTL 24 h),
  indexed in `acp:groq:insights:timeline`, `acp:groq:insights:by_tenant:{tenant_id}` and
  `acp:groq:insights:by_agent:{agent_id}`, and announced on `acp:groq:insights:stream`.
- `duplicate`: this tenant already has an insight for this `event_id`: nothing is rewritten.
- `rate_limited`: the tenant is over its hourly budget (`INSIGHT_BUDGET_PER_HOUR_PER_TENANT`,
  1000 by default, counted in `acp:groq:rate_limit:{tenant_id}`): no insight, no dead letter.
- `dead_lettered`: pushed on `acp:groq:dlq` with its reason: `invalid` (not an event of this
  schema, not JSON, no `payload` field, too large), `llm_permanent`, `llm_exhausted`,
  `conflict` (the `event_id` already has another tenant's insight) or `max_deliveries`.
"""

# The smallest valid event, as a gateway writes it (one line, too long for the text above).
_MINIMAL_EVENT = {
    "event_id": "evt-2026-11-25-0001",
    "tenant_id": "acme",
    "agent_id": "billing-agent",
    "severity": "high",
    "decision": "deny",
    "timestamp": 1795573200.5,
}
_INBOUND_DESCRIPTION = _INBOUND_DESCRIPTION.replace(
    "<XADD_EXAMPLE>", f"    XADD acp:groq_queue * payload '{json.dumps(_MINIMAL_EVENT)}'"
)

_OUTBOUND_DESCRIPTION = """\
One message per insight written, published by the worker in the same transaction as the
insight. The insight itself (summary, risk, recommendation, model, latency) is the JSON at
`insight_key` (`acp:groq:insight:{event_id}`, TTL 24 h). The entries are FastStream messages
(one field `__data__`): read them with a FastStream subscriber, or read the keys directly.
The stream keeps about the newest 10,000 messages (`MAXLEN ~ 10000`).
"""

_DEAD_LETTER_DESCRIPTION = """\
Dead letters: the events that ended as `dead_lettered`, newest first. Each element is one
JSON document (a plain `LPUSH` of the JSON below, not a FastStream message), written in the
same transaction as the acknowledgement of its stream entry. It keeps the entry's fields as
received, so nothing is lost: `groq-worker dlq list` shows them and `groq-worker dlq replay`
puts them back on the inbound stream once the cause is fixed. Read them with
`LRANGE acp:groq:dlq 0 9`. The list is not trimmed: it grows until replayed or purged.
"""

# The inbound channel as the document names it: the contract's stream and group, whatever
# this process's settings say, so the document is the same on every host and deployment.
_DOCUMENTED_STREAM: str = Settings.model_fields["insight_stream"].default
_DOCUMENTED_GROUP: str = Settings.model_fields["insight_group"].default


class _Stream(StreamSub):
    """``StreamSub`` that is not deep-copied on every access when there is no prefix.

    FastStream reads a subscriber's or publisher's stream through ``add_prefix``, which
    deep-copies it: three deep copies per event with a prefix that is always empty here.
    """

    def add_prefix(self, prefix: str) -> Self:
        return self if not prefix else super().add_prefix(prefix)


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
                try:
                    return await default_parser(raw)
                except Exception as exc:  # any failure of it means "not a FastStream message"
                    # e.g. an empty __data__ makes FastStream dump the whole field map as
                    # JSON, which raises on bytes that are not UTF-8
                    problem = (
                        "entry's '__data__' field is not a FastStream message "
                        f"({type(exc).__name__})"
                    )
            else:
                names = ", ".join(sorted(k.decode("utf-8", "replace") for k in fields)) or "none"
                problem = (
                    f"entry has no 'payload' field and is not a FastStream message "
                    f"(fields: {names})"
                )
        message = await default_parser({**raw, "data": {}})
        message.raw_message = raw
        message.body = b"" if problem else fields[PAYLOAD_FIELD]
        if problem:
            message.headers[INVALID_HEADER] = problem
        return message

    return parse_entry


# The message being handled, for the handler. A ``Context("message")`` parameter would do
# the same, but fast_depends resolves it in a worker thread: a thread hop per event.
# Each message is handled in a task of its own, so the variable is per message.
_current_message: ContextVar[Any] = ContextVar("acp_current_message")


async def decode_entry(message: Any, default_decoder: Callable[[Any], Awaitable[Any]]) -> Any:
    """The entry's body as a JSON object, or ``InvalidEvent`` saying why it is not one."""
    _current_message.set(message)
    problem = message.headers.get(INVALID_HEADER)
    if problem:
        raise InvalidEvent(problem)
    try:
        body = json.loads(message.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("payload is JSON nested too deeply to read") from None
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
        stream=_Stream(Keys.INSIGHTS_STREAM, maxlen=INSIGHT_STREAM_MAXLEN),
        title=f"{Keys.INSIGHTS_STREAM}:publish",
        description=_OUTBOUND_DESCRIPTION,
        schema=InsightCreated,
    )


class _LPushListSpecification(ListPublisherSpecification):
    """A list channel written with LPUSH (newest first), as the store writes the DLQ."""

    __slots__ = ()

    @property
    def channel_binding(self) -> redis_bindings.ChannelBinding:
        return redis_bindings.ChannelBinding(channel=self.address, method="lpush")


def declare_dead_letter_publisher(router: RedisRouter) -> ListPublisher:
    """The dead-letter list ``acp:groq:dlq`` with the ``DeadLetter`` schema, for the document.

    Declared so that the AsyncAPI document shows the channel, generated from the model like
    the others; nothing is published through it. The store writes a dead letter itself (a
    plain LPUSH of its JSON, in the MULTI/EXEC that XACKs its entry), because a FastStream
    list publisher RPUSHes a FastStream message envelope: the wrong end of the list, and not
    the JSON that ``groq-worker dlq`` and the contract's readers expect.
    """
    # On a router of its own: a router keeps its publishers in a WeakSet, whose order changes
    # from run to run, but lists an included router's after its own, so the document lists
    # the channels in the same order on every run.
    dead_letters = RedisRouter()
    publisher = dead_letters.publisher(
        list=Keys.DLQ,
        title=f"{Keys.DLQ}:publish",
        description=_DEAD_LETTER_DESCRIPTION,
        schema=DeadLetter,
    )
    router.include_router(dead_letters)
    spec = publisher.specification
    assert isinstance(spec, ListPublisherSpecification)
    # FastStream's list binding says RPUSH; the document must say what the store does.
    publisher.specification = cast(
        "PublisherSpecification[Any, Any]",
        _LPushListSpecification(spec._outer_config, spec.config, spec.list_sub),
    )
    return publisher


def register_event_handlers(
    router: RedisRouter,
    *,
    settings: Settings,
    service: InsightService,
    errors: ExceptionMiddleware,
) -> Any:
    """Declare the inbound subscriber and return it; ``errors`` dead-letters bad entries.

    The recovery loop feeds reclaimed entries to the returned subscriber's ``consume_one``.
    """
    stream, group = settings.insight_stream, settings.insight_group

    subscriber = router.subscriber(
        stream=_Stream(
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
        title=f"{_DOCUMENTED_STREAM}:consume",
        description=_INBOUND_DESCRIPTION,
    )
    # The document describes every worker, so it names the setting, not this process.
    subscriber.specification.stream_sub = StreamSub(  # type: ignore[attr-defined]
        _DOCUMENTED_STREAM, group=_DOCUMENTED_GROUP, consumer="${WORKER_ID}"
    )
    declare_dead_letter_publisher(router)

    @subscriber
    async def handle_audit_event(event: AuditEvent) -> None:
        """Enrich one audit event; the service acks the entry with its writes."""
        message = _current_message.get()
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

    return subscriber


def _safe_body(message: Any) -> object:
    try:
        return json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        return None
