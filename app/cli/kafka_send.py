"""The Kafka producer of ``groq-worker dlq replay`` when the worker reads Kafka.

A letter of a Kafka record goes back to its topic through FastStream's ``KafkaBroker``
(the worker's servers and security), each send confirmed before the letter leaves the DLQ.
Nothing is opened with ``INBOUND=redis`` or on a dry run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from faststream.kafka import KafkaBroker

from app.adapters.dlq import KafkaSend
from app.bootstrap.kafka import kafka_security
from app.settings import Inbound, Settings

__all__ = ["kafka_sender"]


@contextlib.asynccontextmanager
async def kafka_sender(settings: Settings, *, dry_run: bool) -> AsyncIterator[KafkaSend | None]:
    """A sender of payloads to topics (None with INBOUND=redis or on a dry run)."""
    if settings.inbound is not Inbound.KAFKA or dry_run:
        yield None
        return
    broker = KafkaBroker(
        settings.kafka_servers,
        security=kafka_security(settings),
        client_id=f"{settings.worker_id}-dlq-replay",
    )
    await broker.connect()
    try:

        async def send(topic: str, payload: str, key: bytes | None) -> str:
            sent = await broker.publish(payload.encode(), topic, key=key)
            return f"{sent.partition}-{sent.offset}"

        yield send
    finally:
        await broker.stop()
