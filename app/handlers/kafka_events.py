"""Where events enter on Kafka (``INBOUND=kafka``): the ``KAFKA_TOPIC`` subscriber.

The same event path as on Redis: a record's value is the event JSON, validated by the same
``AuditEvent`` (``decode_entry``), handed to the same ``InsightService.process``; an invalid
record is dead-lettered by the same ``Rejections``. What differs is the end of a record:
not an XACK in the writes' transaction but an offset commit after them, which
``KafkaInbound`` makes for each partition's contiguous done prefix (manual commits: the
subscriber's ``AckPolicy.MANUAL``, and FastStream's own ``ack`` is never called, since it
would commit the consumer's position, past records still in flight).

To the store and the dead letters a record is the entry ``<partition>-<offset>`` of the
stream ``kafka:<topic>`` (a name no Redis key has, so the store's XACK of it is a no-op):
its lease, its one budget charge and its dead letter work as on Redis, and ``dlq replay``
knows where a letter came from. The record's key (the tenant, if the producer sets it) is
kept in the letter, and so are its ``traceparent``/``tracestate`` headers, whose trace the
record's consume span joins when tracing is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from aiokafka import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaRouter, Topic
from faststream.kafka.message import KafkaMessage
from faststream.kafka.subscriber.usecase import DefaultSubscriber
from faststream.middlewares import ExceptionMiddleware
from pydantic import ValidationError

from app.adapters.faststream_workarounds import EventLoopContext
from app.adapters.kafka_attempts import RedisAttempts
from app.domain.errors import InvalidEvent
from app.domain.events import AuditEvent, describe_validation_error, rejected_event
from app.domain.ports import EntryRef, Received
from app.handlers.kafka_asyncapi import DOCUMENTED_TOPIC, KAFKA_INBOUND_DESCRIPTION
from app.handlers.kafka_inbound import KafkaInbound, RecordWork
from app.handlers.wire import INVALID_HEADER, PAYLOAD_FIELD, decode_entry
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing
from app.service.insights import InsightService
from app.service.rejections import Rejections
from app.settings import Settings

__all__ = ["KafkaPath", "KafkaRoutes", "handle_kafka_event", "kafka_routes", "received_record"]

KEY_FIELD = b"key"
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class KafkaPath:
    """What the Kafka handlers need beside the service (in the broker's context)."""

    inbound: KafkaInbound
    attempts: RedisAttempts
    rejections: Rejections
    state: WorkerState
    stream: str  # kafka:<topic>
    group: str
    tracing: Tracing | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT set


def _span(kafka: KafkaPath, message: KafkaMessage, received: Received) -> Any:
    """The record's consume span (tracing on), in the trace of its ``traceparent`` header
    (a trace of its own without one): the event's spans are its children. The record is
    handled in a task of its own, outside FastStream's consume scope, so the span is the
    worker's own, as for an event the scheduler hands out later."""
    if kafka.tracing is None:
        return contextlib.nullcontext()
    record = message.raw_message
    assert not isinstance(record, tuple)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "messaging.consumer.group.name": kafka.group,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
    }
    return kafka.tracing.resumed(received.fields, f"{record.topic} process", attributes)


Message = Annotated[KafkaMessage, EventLoopContext("message")]
Service = Annotated[InsightService, EventLoopContext("service")]
Path = Annotated[KafkaPath, EventLoopContext("kafka")]


async def handle_kafka_event(
    event: AuditEvent, message: Message, service: Service, kafka: Path
) -> None:
    """Enrich one audit event from a record; its offset is committed once it is done."""
    received = received_record(message)

    async def handle() -> bool:
        with _span(kafka, message, received):
            outcome = await service.process(event, received)
        # None: the batch lane took it (kept in Redis: done), or the worker began stopping
        # before it started (not done: read again after the restart).
        return outcome is not None or not kafka.state.stopping.is_set()

    await kafka.inbound.accept(_work(message, received, kafka, handle))


async def reject_invalid_record(exc: Exception, message: Message, kafka: Path) -> None:
    """Dead-letter a record that is not a valid event (reason ``invalid``), then commit."""
    received = received_record(message)
    if isinstance(exc, ValidationError):
        error = rejected_event(describe_validation_error(exc), _json_or_none(received.payload))
    else:
        error = exc if isinstance(exc, InvalidEvent) else InvalidEvent(str(exc))

    async def handle() -> bool:
        with _span(kafka, message, received):
            await kafka.rejections.reject(received, error)
        return True

    await kafka.inbound.accept(_work(message, received, kafka, handle))


def _work(
    message: KafkaMessage,
    received: Received,
    kafka: KafkaPath,
    handle: Callable[[], Awaitable[bool]],
) -> RecordWork:
    record = message.raw_message
    assert not isinstance(record, tuple)  # not a batch subscriber
    partition, offset = record.partition, record.offset
    entry = EntryRef(kafka.stream, kafka.group, received.entry_id)
    return RecordWork(
        TopicPartition(record.topic, partition),
        offset,
        handle=handle,
        give_up=lambda deliveries: kafka.rejections.give_up(
            received, deliveries=deliveries, entry=entry
        ),
        count=partial(kafka.attempts.count, partition, offset),
        forget=partial(kafka.attempts.forget, partition, offset),
    )


def received_record(message: Any) -> Received:
    """The record as received: ``<partition>-<offset>``, its value and its key."""
    record = message.raw_message
    value: bytes = record.value or b""
    fields: dict[bytes, bytes] = {PAYLOAD_FIELD: value}
    for name, header in record.headers or ():
        if name in _TRACE_HEADERS and isinstance(header, bytes):  # kept for the letter
            fields[name.encode()] = header
    if record.key:
        fields[KEY_FIELD] = (
            record.key if isinstance(record.key, bytes) else str(record.key).encode()
        )
    return Received(f"{record.partition}-{record.offset}", fields, value or None, "payload")


def record_parser(max_event_bytes: int) -> Callable[..., Awaitable[Any]]:
    """FastStream's parser, but a record it cannot read (a header that is not UTF-8) or one
    too large is marked invalid, never raised: every record must reach a handler, or its
    offset would hold its partition's commit back forever."""

    async def parse_record(raw: Any, default_parser: Callable[[Any], Awaitable[Any]]) -> Any:
        problem: str | None = None
        size = len(raw.value or b"")
        try:
            message = await default_parser(raw)
        except Exception as exc:
            message = await default_parser(dataclasses.replace(raw, headers=()))
            problem = f"record headers could not be read ({type(exc).__name__})"
        if size > max_event_bytes:
            problem = f"record is larger than MAX_EVENT_BYTES ({size} > {max_event_bytes} bytes)"
        if problem:
            message.body = b""
            message.headers[INVALID_HEADER] = problem
        return message

    return parse_record


@dataclass(frozen=True, slots=True)
class KafkaRoutes:
    """The router to include in the Kafka broker, its subscriber and the in-flight records."""

    router: KafkaRouter
    subscriber: DefaultSubscriber
    inbound: KafkaInbound


def kafka_routes(settings: Settings, state: WorkerState) -> KafkaRoutes:
    """Declare the handler on ``KAFKA_TOPIC`` for the group ``INSIGHT_GROUP``."""
    errors = ExceptionMiddleware(
        handlers={InvalidEvent: reject_invalid_record, ValidationError: reject_invalid_record}
    )
    router = KafkaRouter(middlewares=[errors])
    holder: list[DefaultSubscriber] = []
    inbound = KafkaInbound(
        concurrency=settings.worker_concurrency,
        max_deliveries=settings.max_deliveries,
        # Within the group's patience: the other members wait in the rebalance meanwhile.
        revoke_seconds=min(
            settings.shutdown_timeout_seconds, settings.kafka_session_timeout_ms / 2000
        ),
        consumer=lambda: holder[0].consumer if holder else None,
        state=state,
    )
    subscriber = router.subscriber(
        Topic(settings.kafka_topic, declare=False),  # topics are the operator's to create
        group_id=settings.insight_group,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        listener=inbound,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
        parser=record_parser(settings.max_event_bytes),
        decoder=decode_entry,
        title=f"{DOCUMENTED_TOPIC}:consume",
        description=KAFKA_INBOUND_DESCRIPTION,
    )
    subscriber(handle_kafka_event)
    assert isinstance(subscriber, DefaultSubscriber)
    holder.append(subscriber)
    return KafkaRoutes(router, subscriber, inbound)


def _json_or_none(payload: bytes | str | None) -> Any:
    try:
        return json.loads(payload or b"")
    except (ValueError, UnicodeDecodeError):
        return None
