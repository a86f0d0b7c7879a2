"""What the app is at import: its settings, logs, metrics, clients, broker and document.

Nothing here connects to anything or needs the model: ``faststream docs gen app:app``
builds the same app with no Redis and no key. What runs is built when the app starts
(``app.bootstrap.running``, through the app's lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware

from app.adapters.faststream_workarounds import GroupHealingBroker, GroupHealingClusterBroker
from app.adapters.redis_clients import RedisClient, connect_redis
from app.bootstrap.event_path import EventPath, serve_events
from app.bootstrap.kafka import build_kafka_broker
from app.bootstrap.running import Running, start
from app.domain.ports import LLM, BatchAPI, InsightStore
from app.handlers.asyncapi import APP_DESCRIPTION, SPEC_SERVER_URL, WorkerAsyncAPI
from app.handlers.events import EventRoutes, event_routes
from app.handlers.kafka_events import KafkaRoutes, kafka_routes
from app.runtime.logs import configure_logging, get_logger
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing, start_tracing
from app.service.lane_runner import TICK_SECONDS
from app.service.prompting import BuildPrompt
from app.settings import Inbound, RedisMode, Settings, SettingsError, load_settings

__all__ = ["Fakes", "Worker", "build_worker", "create_app", "package_version"]

log = get_logger("acp.groq_worker")


@dataclass(frozen=True, slots=True)
class Fakes:
    """What tests put in place of the real parts (None: the real one)."""

    llm: LLM | None = None
    store: InsightStore | None = None
    batch_api: BatchAPI | None = None
    build_prompt: BuildPrompt | None = None
    lane_tick_seconds: float = TICK_SECONDS


@dataclass(slots=True)
class Worker:
    """The app and what it is built of; ``running()`` runs it (tests, the demo)."""

    settings: Settings
    metrics: Metrics
    redis: RedisClient
    state: WorkerState
    broker: RedisBroker
    routes: EventRoutes
    fakes: Fakes
    # INBOUND=kafka: the Kafka broker beside the Redis one (which keeps every write)
    kafka: KafkaRoutes | None = None
    kafka_broker: KafkaBroker | None = None
    tracing: Tracing | None = None  # None: OTEL_EXPORTER_OTLP_ENDPOINT unset, nothing built
    app: FastStream = field(init=False)

    def __post_init__(self) -> None:
        brokers: list[Any] = [self.broker]
        if self.kafka_broker is not None:
            brokers.append(self.kafka_broker)
        app = FastStream(
            *brokers,
            logger=logging.getLogger("acp.groq_worker.app"),
            lifespan=self._lifespan,
            # Signals, not state: the background tasks wait for the first, and no new
            # claim or model call starts after the second (before the broker drains).
            after_startup=[self.state.started.set],
            # Kafka: the records in flight finish and are committed before any broker stops.
            on_shutdown=[self.state.stop, self._drain_kafka],
            specification=WorkerAsyncAPI(
                title="acp-groq-worker",
                version=package_version(),
                description=APP_DESCRIPTION,
                schema_version="3.0.0",
            ),
        )
        self.app = app

    @contextlib.asynccontextmanager
    async def _lifespan(self, worker_id: int | None = None) -> AsyncIterator[None]:
        # `worker_id` is FastStream's process index under `faststream run --workers N`
        # (not the consumer name, settings.worker_id); process i serves METRICS_PORT + i.
        try:
            async with start(self, process_index=worker_id or 0):
                yield
        finally:
            if self.tracing is not None:  # the last spans exported, bounded
                await asyncio.to_thread(self.tracing.shutdown)

    async def _drain_kafka(self) -> None:
        if self.kafka is not None:
            left = self.state.left_of(self.settings.shutdown_timeout_seconds)
            cancelled = await self.kafka.inbound.drain(left)
            if cancelled:
                log.warning("kafka_records_cancelled", records=cancelled, note="not committed")

    @property
    def running_brokers(self) -> bool:
        """Every broker of the app runs (not starting, not draining)."""
        kafka = self.kafka_broker
        return self.broker.running and (kafka is None or kafka.running)

    def event_path(self) -> contextlib.AbstractAsyncContextManager[EventPath]:
        """Only the event path, in the broker's context (handler tests on an in-memory
        broker: ``TestRedisBroker``)."""
        return serve_events(self)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Running]:
        """Run the app in this loop as ``faststream run`` does (lifespan, hooks, broker)."""
        try:
            async with start(self) as live:
                await self.app.start()
                try:
                    yield live
                finally:
                    await self.app.stop()
        finally:
            if self.tracing is not None:
                await asyncio.to_thread(self.tracing.shutdown)


def build_worker(
    settings: Settings | None = None,
    *,
    llm: LLM | None = None,
    store: InsightStore | None = None,
    metrics: Metrics | None = None,
    batch_api: BatchAPI | None = None,
    build_prompt: BuildPrompt | None = None,
    lane_tick_seconds: float = TICK_SECONDS,
    configure_logs: bool = True,
) -> Worker:
    """The worker's app and parts; ``llm``/``store``/``metrics``/``batch_api``/
    ``build_prompt`` replace the real ones in tests."""
    settings = settings if settings is not None else load_settings()
    if refusal := settings.scheduler_refusal():
        raise SettingsError(refusal)
    tracing = start_tracing(settings, version=package_version())
    if configure_logs:
        configure_logging(
            level=settings.log_level,
            fmt=settings.log_format,
            secrets=secrets(settings),
            trace_ids=tracing is not None,
        )
    broker = build_broker(settings)
    telemetry = (
        None if tracing is None else RedisTelemetryMiddleware(tracer_provider=tracing.provider)
    )
    routes = event_routes(settings, telemetry=telemetry)
    broker.include_router(routes.router)
    state = WorkerState()
    kafka = kafka_routes(settings, state) if settings.inbound is Inbound.KAFKA else None
    return Worker(
        settings=settings,
        metrics=metrics if metrics is not None else Metrics(),
        redis=build_redis(settings),
        state=state,
        broker=broker,
        routes=routes,
        fakes=Fakes(llm, store, batch_api, build_prompt, lane_tick_seconds),
        kafka=kafka,
        kafka_broker=build_kafka_broker(settings, kafka) if kafka is not None else None,
        tracing=tracing,
    )


def create_app(
    settings: Settings | None = None,
    *,
    llm: LLM | None = None,
    store: InsightStore | None = None,
    metrics: Metrics | None = None,
) -> FastStream:
    """The FastStream app of the worker (``faststream run app:app``)."""
    return build_worker(settings, llm=llm, store=store, metrics=metrics).app


def secrets(settings: Settings) -> list[str]:
    """The configured keys, which no log line may show."""
    keys = (settings.groq_api_key, settings.llm_api_key, settings.kafka_sasl_plain_password)
    return [key.get_secret_value() for key in keys if key]


def build_redis(settings: Settings) -> RedisClient:
    """The worker's own client (the broker has another) for the event path and the rest."""
    return connect_redis(
        str(settings.redis_url),
        settings.redis_mode,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=15,
    )


def build_broker(settings: Settings) -> RedisBroker:
    """FastStream's broker of the mode, healing a vanished consumer group in place."""
    cluster = settings.redis_mode is RedisMode.CLUSTER
    broker_class = GroupHealingClusterBroker if cluster else GroupHealingBroker
    return broker_class(
        str(settings.redis_url),
        graceful_timeout=settings.shutdown_timeout_seconds,
        logger=logging.getLogger("acp.groq_worker.faststream"),
        # "Received"/"Processed" per message at DEBUG: our canonical line says more.
        log_level=logging.DEBUG,
        specification_url=SPEC_SERVER_URL,
        description="The Redis holding the gateway's event stream and the insight keys.",
        socket_timeout=max(10.0, settings.read_block_ms / 1000 + 5.0),
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=15,
    )


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("acp-groq-worker")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+local"
