"""Where events enter and insights leave: the ``acp:groq_queue`` subscriber and publishers.

``handle_audit_event`` receives an ``AuditEvent`` validated by pydantic from the entry
(``app/handlers/wire.py`` reads both wire formats) and hands it to ``InsightService``,
which decides everything else and acks the entry with its writes. An entry that is not a
valid event never reaches it: ``InvalidEvent`` or pydantic's ``ValidationError`` goes to
``dead_letter_invalid`` instead. ``event_routes`` declares both with the stream, group and
consumer of this process's settings; the service and the rejections arrive through the
broker's context
(``broker.context.set_global("service", ...)`` in ``app/bootstrap/event_path.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import AckPolicy
from faststream.middlewares import ExceptionMiddleware
from faststream.redis import RedisRouter
from faststream.redis.message import RedisStreamMessage
from faststream.redis.publisher.usecase import StreamPublisher
from faststream.redis.subscriber.usecases import StreamSubscriber
from pydantic import ValidationError

from app.adapters.faststream_workarounds import EventLoopContext, UncopiedStreamSub
from app.domain.errors import InvalidEvent
from app.domain.events import AuditEvent, describe_validation_error, rejected_event
from app.domain.insight_stream import InsightCreatedEntry
from app.domain.insights import DeadLetter
from app.domain.keys import INSIGHT_STREAM_MAXLEN, Keys
from app.handlers import asyncapi
from app.handlers.wire import decode_entry, entry_parser, received
from app.service.insights import InsightService
from app.service.rejections import Rejections
from app.settings import Inbound, Settings

__all__ = ["EventRoutes", "dead_letter_invalid", "event_routes", "handle_audit_event"]

Message = Annotated[RedisStreamMessage, EventLoopContext("message")]
Service = Annotated[InsightService, EventLoopContext("service")]
RejectionsOf = Annotated[Rejections, EventLoopContext("rejections")]


async def handle_audit_event(event: AuditEvent, message: Message, service: Service) -> None:
    """Enrich one audit event; the service acks the entry with its writes."""
    await service.process(event, received(message))


async def dead_letter_invalid(exc: Exception, message: Message, rejections: RejectionsOf) -> None:
    """Dead-letter an entry that is not a valid event, with the reason (``invalid``)."""
    if isinstance(exc, ValidationError):
        error = rejected_event(describe_validation_error(exc), _json_or_none(message))
    else:
        error = exc if isinstance(exc, InvalidEvent) else InvalidEvent(str(exc))
    await rejections.reject(received(message), error)


@dataclass(frozen=True, slots=True)
class EventRoutes:
    """The router to include in the broker, and what the rest of the worker uses of it."""

    router: RedisRouter
    # the recovery loop feeds reclaimed entries to it; None with INBOUND=kafka
    subscriber: StreamSubscriber | None
    # InsightCreated, declared for the document: the store XADDs each entry's plain fields
    # in the transaction of the writes (app/adapters/insight_stream.py).
    insights: StreamPublisher


def event_routes(settings: Settings, *, telemetry: Any = None) -> EventRoutes:
    """Declare the handlers with this process's stream, group and consumer name.

    ``telemetry`` (tracing on): FastStream's middleware, whose consume span wraps the
    handler *and* the dead-lettering of an invalid entry: the exception handler runs
    inside its scope (``publish_handlers``, which publish nothing here: no reply, no
    publisher on the subscriber), so the letter is written under the span and the span
    does not record the validation error (which would quote the entry's values).
    """
    errors = ExceptionMiddleware(
        publish_handlers={InvalidEvent: dead_letter_invalid, ValidationError: dead_letter_invalid}
    )
    middlewares = [errors] if telemetry is None else [telemetry, errors]
    router = RedisRouter(middlewares=middlewares)
    subscriber: StreamSubscriber | None = None
    if settings.inbound is Inbound.REDIS:
        subscriber = _stream_subscriber(router, settings)
    insights = router.publisher(
        stream=UncopiedStreamSub(Keys.INSIGHTS_STREAM, maxlen=INSIGHT_STREAM_MAXLEN),
        title=f"{Keys.INSIGHTS_STREAM}:publish",
        description=asyncapi.OUTBOUND_DESCRIPTION,
        schema=InsightCreatedEntry,
    )
    # On a router of its own: a router keeps its publishers in a WeakSet, whose order
    # changes from run to run, but lists an included router's after its own, so the
    # document lists the channels in the same order on every run.
    # Declared for the document only: the store LPUSHes each letter with its XACK.
    dead_letter_router = RedisRouter()
    dead_letter_router.publisher(
        list=Keys.DLQ,
        title=f"{Keys.DLQ}:publish",
        description=asyncapi.DEAD_LETTER_DESCRIPTION,
        schema=DeadLetter,
    )
    router.include_router(dead_letter_router)
    assert isinstance(insights, StreamPublisher)
    return EventRoutes(router, subscriber, insights)


def _stream_subscriber(router: RedisRouter, settings: Settings) -> StreamSubscriber:
    """The subscriber of INSIGHT_STREAM (INBOUND=redis), with ``handle_audit_event``."""
    subscriber = router.subscriber(
        stream=UncopiedStreamSub(
            settings.insight_stream,
            group=settings.insight_group,
            consumer=settings.worker_id,
            max_records=settings.read_count,
            polling_interval=settings.read_block_ms,
        ),
        max_workers=settings.handlers,
        ack_policy=AckPolicy.MANUAL,
        # The contract has no replies: FastStream would publish one to any ``reply_to`` a
        # stream writer put in a message's envelope, wherever it points.
        no_reply=True,
        parser=entry_parser(settings.max_event_bytes),
        decoder=decode_entry,
        title=f"{asyncapi.DOCUMENTED_STREAM}:consume",
        description=asyncapi.INBOUND_DESCRIPTION,
    )
    subscriber(handle_audit_event)
    assert isinstance(subscriber, StreamSubscriber)
    return subscriber


def _json_or_none(message: RedisStreamMessage) -> Any:
    try:
        return json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        return None
