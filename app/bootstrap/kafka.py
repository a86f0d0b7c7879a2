"""The Kafka inbound's parts (``INBOUND=kafka``): its broker, and what runs beside it.

* ``build_kafka_broker``: FastStream's ``KafkaBroker`` with the settings' servers and
  security (aiokafka's names), and the handler declared on it (``kafka_routes``). It runs
  beside the Redis broker, which publishes InsightCreated and holds every key, as today.
* ``serve_kafka``: on the running loop, the handlers' ``KafkaPath`` in the broker's
  context, the commit loop, and the readiness checks of Kafka mode.

``EVENT_ORDER`` applies to the Redis inbound only: on Kafka, records are handled in
partition order (up to ``WORKER_CONCURRENCY`` at once, committed in order), which is what
the worker logs at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from app.adapters.kafka_attempts import RedisAttempts
from app.adapters.redis_clients import RedisClient
from app.handlers.kafka_asyncapi import KAFKA_SPEC_SERVER_URL
from app.handlers.kafka_events import KafkaPath, KafkaRoutes
from app.operations.http import ReadinessCheck
from app.runtime.logs import get_logger
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing
from app.service.rejections import Rejections
from app.settings import Settings
from app.settings.kafka import SaslMechanism

__all__ = [
    "build_kafka_broker",
    "kafka_checks",
    "kafka_path",
    "kafka_security",
    "start_commit_loop",
    "start_lag_sampler",
    "wait_for_kafka",
]

log = get_logger("acp.groq_worker.kafka")


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """The security of ``KAFKA_SECURITY_PROTOCOL`` and its companions (None: PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol.uses_ssl:
        cafile, certfile, keyfile = settings.kafka_ssl_files
        context = create_ssl_context(
            cafile=str(cafile) if cafile else None,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
    if not protocol.uses_sasl:
        return BaseSecurity(ssl_context=context) if context is not None else None
    user = settings.kafka_sasl_plain_username or ""
    password = (
        settings.kafka_sasl_plain_password.get_secret_value()
        if settings.kafka_sasl_plain_password
        else ""
    )
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is SaslMechanism.SCRAM_SHA_256:
        return SASLScram256(user, password, ssl_context=context, use_ssl=protocol.uses_ssl)
    if mechanism is SaslMechanism.SCRAM_SHA_512:
        return SASLScram512(user, password, ssl_context=context, use_ssl=protocol.uses_ssl)
    return SASLPlaintext(user, password, ssl_context=context, use_ssl=protocol.uses_ssl)


def build_kafka_broker(settings: Settings, routes: KafkaRoutes) -> KafkaBroker:
    """FastStream's Kafka broker for ``KAFKA_BOOTSTRAP_SERVERS``, with the handler."""
    broker = KafkaBroker(
        settings.kafka_servers,
        security=kafka_security(settings),
        client_id=settings.worker_id,
        graceful_timeout=settings.shutdown_timeout_seconds,
        logger=logging.getLogger("acp.groq_worker.faststream"),
        log_level=logging.DEBUG,
        description="The Kafka cluster carrying the gateway's decision events.",
        specification_url=KAFKA_SPEC_SERVER_URL,  # the document is the same everywhere
    )
    broker.include_router(routes.router)
    return broker


def kafka_path(
    settings: Settings,
    routes: KafkaRoutes,
    redis: RedisClient,
    rejections: Rejections,
    state: WorkerState,
    tracing: Tracing | None = None,
) -> KafkaPath:
    """What the Kafka handlers need beside the service."""
    return KafkaPath(
        inbound=routes.inbound,
        attempts=RedisAttempts(redis, group=settings.insight_group, topic=settings.kafka_topic),
        rejections=rejections,
        state=state,
        stream=settings.kafka_stream_ref,
        group=settings.insight_group,
        tracing=tracing,
    )


async def wait_for_kafka(settings: Settings, state: WorkerState) -> None:
    """Before the Kafka consumer starts: wait out brokers that do not answer yet (as Redis
    is waited for), so that a worker started before Kafka does not exit; refused
    credentials and other errors are raised."""
    delay = 0.5
    options = parse_security(kafka_security(settings))
    while not state.stopping.is_set():
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_servers, request_timeout_ms=10_000, **options
        )
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            log.warning("kafka_unreachable_at_start", error=str(exc), retry_in=delay)
            if await state.pause(delay):
                return
            delay = min(delay * 2, 10.0)
            continue
        finally:
            await admin.close()
        log.info("kafka_reachable", servers=settings.kafka_bootstrap_servers)
        return


def start_commit_loop(routes: KafkaRoutes, started: asyncio.Event) -> asyncio.Task[Any]:
    """The loop committing each partition's done prefix, from when the brokers run."""

    async def run() -> None:
        await started.wait()
        await routes.inbound.commit_loop()

    return asyncio.create_task(run(), name="kafka-commits")


def start_lag_sampler(
    routes: KafkaRoutes, metrics: Metrics, started: asyncio.Event, every: float = 5.0
) -> asyncio.Task[Any]:
    """``acp_groq_kafka_lag{topic,partition}`` for the partitions this process owns."""

    async def run() -> None:
        await started.wait()
        while True:
            lags = routes.inbound.lags()
            metrics.kafka_lag.clear()  # partitions moved away leave no stale figure
            for tp, lag in lags.items():
                metrics.kafka_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
            await asyncio.sleep(every)

    return asyncio.create_task(run(), name="kafka-lag")


def kafka_checks(
    routes: KafkaRoutes, redis: RedisClient, running: Callable[[], bool]
) -> list[ReadinessCheck]:
    """Kafka mode's own checks: the consumer runs and is a member of the group with an
    assignment (replacing the Redis group's check), and Redis answers."""

    async def member() -> str | None:
        if routes.subscriber.consumer is None or not running():
            return "Kafka consumer is not running (starting or stopping)"
        if routes.inbound.assignment is None:
            return "Kafka consumer has not joined the group yet"
        return None

    async def redis_answers() -> str | None:
        await redis.ping()
        return None

    return [ReadinessCheck("kafka_group", member), ReadinessCheck("redis", redis_answers)]
