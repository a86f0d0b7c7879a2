"""The composition root: settings, clients, metrics and providers are built here, once.

``create_app`` returns the FastStream app that ``faststream run app:app`` runs; tests call
``build_worker`` (or ``create_app``) with fakes. Nothing here connects to anything: Redis
and the model are reached only once the app starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from faststream import FastStream
from faststream.redis import RedisBroker
from redis.asyncio.cluster import RedisCluster

from app.adapters.faststream_workarounds import (
    GroupHealingBroker,
    GroupHealingClusterBroker,
    ensure_group,
)
from app.adapters.inspect import group_info
from app.adapters.redis_claims import RedisClaims
from app.adapters.redis_clients import RedisClient, connect_redis
from app.adapters.redis_cluster_store import RedisClusterInsightStore
from app.adapters.redis_errors import says_not_now
from app.adapters.redis_lane import RedisLaneStore
from app.adapters.redis_store import RedisInsightStore
from app.adapters.retention import start_retention
from app.domain.batch import LanePolicy
from app.domain.breaker import CircuitBreaker
from app.domain.events import AuditEvent
from app.domain.insights import InsightCreated, InsightRecord
from app.domain.ports import LLM, BatchAPI, InsightStore
from app.domain.prompt import InsightPrompt
from app.handlers.asyncapi import APP_DESCRIPTION, SPEC_SERVER_URL, WorkerAsyncAPI
from app.handlers.events import event_routes
from app.handlers.recovery import PendingRecovery
from app.operations.http import OperationsServer, start_operations
from app.runtime.heap import freeze_startup_heap, thaw_heap
from app.runtime.logs import configure_logging, get_logger
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service.batch_lane import BatchLane
from app.service.insights import InsightService
from app.service.lane_runner import TICK_SECONDS, LaneRunner
from app.service.model_calls import ModelCaller
from app.settings import LLMProvider, RedisMode, Settings, SettingsError, load_settings

__all__ = [
    "Worker",
    "build_batch_api",
    "build_llm",
    "build_worker",
    "create_app",
    "package_version",
]

log = get_logger("acp.groq_worker")

# How long a stopping worker tries to hand back what it holds (Redis may be the reason).
_HAND_BACK_SECONDS = 5.0
# How long a worker with the batch lane off looks for requests a previous one left there.
_LANE_CHECK_SECONDS = 10.0


def package_version() -> str:
    try:
        return version("acp-groq-worker")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+local"


def build_llm(
    settings: Settings,
    *,
    redis: RedisClient | None = None,
    metrics: Metrics | None = None,
    stopping: asyncio.Event | None = None,
) -> LLM:
    """The configured LLM provider, behind the shared rate limiter when limits are set.

    The limiter needs the worker's ``redis`` and ``metrics`` (without them, no limiter);
    ``stopping`` lets a call waiting on it be postponed at shutdown.
    """
    provider = _build_provider(settings)
    limits = settings.limit_table
    if redis is None or metrics is None or not limits.any:
        return provider
    from app.adapters.rate_limit import RateLimitedLLM, RedisLimiter

    return RateLimitedLLM(
        provider,
        RedisLimiter(redis, limits),
        metrics=metrics,
        pause_threshold=settings.groq_limiter_pause_threshold_seconds,
        stopping=stopping,
    )


def build_batch_api(settings: Settings) -> BatchAPI:
    """The provider's Batch API for the batch lane (Groq's, or the offline one)."""
    if settings.llm_provider is LLMProvider.OFFLINE:
        from app.adapters.offline_llm import OfflineBatchAPI

        return OfflineBatchAPI()
    if settings.groq_api_key is None:
        raise SettingsError("invalid settings: GROQ_API_KEY: required when LLM_PROVIDER=groq")
    from app.adapters.groq_batches import GroqBatchAPI

    return GroqBatchAPI(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=str(settings.groq_base_url) if settings.groq_base_url else None,
    )


def _build_provider(settings: Settings) -> LLM:
    """The provider itself. Refuses to start the Groq one without a key."""
    if settings.llm_provider is LLMProvider.OFFLINE:
        from app.adapters.offline_llm import OfflineLLM

        return OfflineLLM()
    if settings.llm_provider is LLMProvider.OPENAI_COMPATIBLE:
        from app.adapters.openai_compatible_llm import OpenAICompatibleLLM

        assert settings.llm_base_url is not None  # the settings refuse it missing
        return OpenAICompatibleLLM(
            base_url=str(settings.llm_base_url),
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            timeout_seconds=settings.groq_timeout_seconds,
        )
    if settings.groq_api_key is None:
        raise SettingsError(
            "invalid settings: GROQ_API_KEY: required when LLM_PROVIDER=groq "
            "(set LLM_PROVIDER=offline to run without a model)"
        )
    from app.adapters.groq_llm import GroqLLM

    return GroqLLM(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=str(settings.groq_base_url) if settings.groq_base_url else None,
        timeout_seconds=settings.groq_timeout_seconds,
        max_connections=max(settings.worker_concurrency, 100),
    )


@dataclass
class Worker:
    """Everything ``create_app`` wires, for tests and the CLI to reach into."""

    settings: Settings
    app: FastStream
    broker: RedisBroker
    metrics: Metrics
    service: InsightService
    model: ModelCaller
    state: WorkerState
    redis: RedisClient
    store: InsightStore
    llm: LLM | None
    recovery: PendingRecovery
    operations: OperationsServer | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    lane: BatchLane | None = None  # GROQ_BATCH_SEVERITIES set
    batch_api: BatchAPI | None = None
    lane_runner: LaneRunner | None = None


class _PendingLLM:
    """Stands in for the provider until the app starts (the provider is built then)."""

    async def complete(self, request: Any) -> Any:
        raise RuntimeError("the LLM provider is built when the app starts")

    async def aclose(self) -> None:
        return None


async def _wait_for_redis(redis: RedisClient, settings: Settings) -> None:
    """Create the group at 0 (MKSTREAM) before the subscriber starts; wait out an outage."""
    delay = 0.5
    while True:
        try:
            created = await ensure_group(redis, settings.insight_stream, settings.insight_group)
        except Exception as exc:
            if not says_not_now(exc):
                raise
            log.warning("redis_unreachable_at_start", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        log.info(
            "consumer_group_ready",
            stream=settings.insight_stream,
            group=settings.insight_group,
            created=created,
            consumer=settings.worker_id,
        )
        return


async def _lane_needs_a_runner(worker: Worker) -> bool:
    """The lane is on, or off with requests left in it (answered, then it stays quiet)."""
    lane = worker.lane
    if lane is None:
        return False
    if not lane.policy.enabled:
        try:
            async with asyncio.timeout(_LANE_CHECK_SECONDS):
                if not await lane.store.has_work():
                    return False
        except Exception as exc:  # StoreUnavailable, a timeout, an error reply
            # Redis away at start: the lane's leftovers (if any) wait for a restart.
            log.info("batch_lane_not_checked", error=str(exc))
            return False
        log.warning(
            "batch_lane_draining",
            note="GROQ_BATCH_SEVERITIES is empty but requests wait in the lane: they are "
            "submitted and collected, and no new event takes the lane",
        )
    if worker.batch_api is None:
        try:
            worker.batch_api = build_batch_api(worker.settings)
        except SettingsError as exc:
            log.error("batch_lane_without_api", error=str(exc))
            return False
    return True


def build_worker(
    settings: Settings | None = None,
    *,
    llm: LLM | None = None,
    store: InsightStore | None = None,
    metrics: Metrics | None = None,
    batch_api: BatchAPI | None = None,
    build_prompt: Callable[[AuditEvent], InsightPrompt] | None = None,
    lane_tick_seconds: float = TICK_SECONDS,
    configure_logs: bool = True,
) -> Worker:
    """Wire the worker. ``llm``/``store``/``metrics``/``batch_api``/``build_prompt`` replace
    the real ones in tests."""
    settings = settings if settings is not None else load_settings()
    if configure_logs:
        secrets = [
            key.get_secret_value() for key in (settings.groq_api_key, settings.llm_api_key) if key
        ]
        configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=secrets)
    metrics = metrics if metrics is not None else Metrics()
    redis = connect_redis(
        str(settings.redis_url),
        settings.redis_mode,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=15,
    )
    cluster = settings.redis_mode is RedisMode.CLUSTER
    broker_class = GroupHealingClusterBroker if cluster else GroupHealingBroker
    broker = broker_class(
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
    routes = event_routes(settings)
    broker.include_router(routes.router)

    async def publish_created(created: InsightCreated, pipeline: Any) -> Any:
        # No pipeline (cluster mode): FastStream publishes on its own connection.
        return await routes.insights.publish(created, pipeline=pipeline)

    async def announce(record: InsightRecord) -> Any:
        """InsightCreated for a stored record (a cluster write resumed after a crash)."""
        return await publish_created(InsightCreated.announcing(record), None)

    if store is None:
        dlq_max = settings.dlq_max_entries
        if isinstance(redis, RedisCluster):
            store = RedisClusterInsightStore(redis, announce=announce, dlq_max_entries=dlq_max)
        else:
            store = RedisInsightStore(redis, dlq_max_entries=dlq_max)

    state = WorkerState()
    model = ModelCaller(
        settings,
        llm=llm if llm is not None else _PendingLLM(),
        metrics=metrics,
        state=state,
        breaker=CircuitBreaker(
            threshold=settings.breaker_failure_threshold,
            cooldown=settings.breaker_cooldown_seconds,
        ),
    )
    # The lane is wired even when off (GROQ_BATCH_SEVERITIES empty: no event takes it), so
    # that requests a previous configuration left there are still answered. Not in a
    # cluster: its steps span slots (the settings refuse the lane with REDIS_MODE=cluster).
    lane = None
    if not isinstance(redis, RedisCluster):
        policy = LanePolicy(settings.groq_batch_severities, settings.groq_batch_when_lag_above)
        lane = BatchLane(policy, RedisLaneStore(redis, dlq_max_entries=settings.dlq_max_entries))
    service = InsightService(
        settings,
        model=model,
        store=store,
        metrics=metrics,
        publish_created=publish_created,
        state=state,
        lane=lane,
        build_prompt=build_prompt,
    )
    broker.context.set_global("service", service)
    claims = RedisClaims(redis, settings.insight_stream, settings.insight_group, settings.worker_id)
    recovery = PendingRecovery(
        claims, settings, subscriber=routes.subscriber, service=service, state=state
    )

    app = FastStream(
        broker,
        logger=logging.getLogger("acp.groq_worker.app"),
        specification=WorkerAsyncAPI(
            title="acp-groq-worker",
            version=package_version(),
            description=APP_DESCRIPTION,
            schema_version="3.0.0",
        ),
    )
    worker = Worker(
        settings=settings,
        app=app,
        broker=broker,
        metrics=metrics,
        service=service,
        model=model,
        state=state,
        redis=redis,
        store=store,
        llm=llm,
        recovery=recovery,
        lane=lane,
        batch_api=batch_api,
    )

    @app.on_startup
    async def start(worker_id: int | None = None) -> None:
        # `worker_id` is FastStream's process index under `faststream run --workers N`
        # (not settings.worker_id, the consumer name); process i serves METRICS_PORT + i.
        if worker.llm is None:
            worker.llm = build_llm(settings, redis=redis, metrics=metrics, stopping=state.stopping)
            model.llm = worker.llm
        # Before waiting for Redis: /health/live answers (and /ready says 503) meanwhile.
        worker.operations = await start_operations(
            settings,
            redis,
            metrics,
            subscriber_running=lambda: broker.running,
            breaker_open=model.breaker_open,
            llm=worker.llm,
            redis_refusal=lambda: state.redis_refusal,
            process_index=worker_id or 0,
        )
        await _wait_for_redis(redis, settings)
        await recovery.prepare()
        # Last, before the subscriber reads: what exists now lives as long as the process.
        log.debug("startup_heap_frozen", objects=freeze_startup_heap())

    async def group_lag() -> int | None:
        info = await group_info(redis, settings.insight_stream, settings.insight_group)
        return info.lag if info is not None else None

    @app.after_startup
    async def start_recovery() -> None:
        worker.background.append(asyncio.create_task(recovery.run(), name="pending-recovery"))
        worker.background.append(start_retention(redis, settings, metrics))
        if worker.lane is not None:
            worker.background.append(asyncio.create_task(run_lane(), name="batch-lane"))

    async def run_lane() -> None:
        # In a task of its own: the leftovers check never holds up the start.
        if not await _lane_needs_a_runner(worker):
            return
        assert worker.lane is not None
        assert worker.batch_api is not None
        worker.lane_runner = LaneRunner(
            settings,
            lane=worker.lane,
            api=worker.batch_api,
            service=service,
            metrics=metrics,
            state=state,
            lag=group_lag,
            tick_seconds=lane_tick_seconds,
            lock_ttl_seconds=settings.groq_batch_lock_seconds,
        )
        await worker.lane_runner.run()

    @app.on_shutdown
    async def stop_taking_work() -> None:
        # Before the broker drains its handlers: no more claims, no new model calls.
        state.stopping.set()

    @app.after_shutdown
    async def close() -> None:
        for task in worker.background:
            task.cancel()
        # In-flight events are done: what this consumer still holds goes to the others now.
        # Bounded: with Redis away the entries simply go idle and are claimed as before.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HAND_BACK_SECONDS):
                await recovery.hand_back()
        if worker.operations is not None:
            await worker.operations.stop()
        if worker.llm is not None:
            await worker.llm.aclose()
        if worker.batch_api is not None:
            await worker.batch_api.aclose()
        await redis.aclose()
        thaw_heap()
        log.info("worker_stopped", consumer=settings.worker_id)

    return worker


def create_app(
    settings: Settings | None = None,
    *,
    llm: LLM | None = None,
    store: InsightStore | None = None,
    metrics: Metrics | None = None,
) -> FastStream:
    """The FastStream app of the worker (``faststream run app:app``)."""
    return build_worker(settings, llm=llm, store=store, metrics=metrics).app
