"""What runs while the app runs, built on the running loop and taken down in reverse.

``start`` is the app's lifespan: before the broker starts, the event path (the service in
the broker's context), the operations port, the consumer group (created at 0, an outage
waited out), the recovery loop's note of what is pending on this consumer, and the batch
lane's runner; after the broker stopped and drained its handlers, the hand-back of what
this consumer still holds, then the clients. The background loops start with the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from app.adapters.faststream_workarounds import ensure_group
from app.adapters.inspect import group_info
from app.adapters.redis_claims import RedisClaims
from app.adapters.redis_clients import RedisClient
from app.adapters.redis_errors import says_not_now
from app.adapters.retention import start_retention
from app.bootstrap.event_path import EventPath, serve_events
from app.bootstrap.kafka import (
    kafka_checks,
    start_commit_loop,
    start_lag_sampler,
    wait_for_kafka,
)
from app.bootstrap.providers import build_batch_api
from app.domain.ports import LLM, BatchAPI
from app.handlers.recovery import PendingRecovery
from app.operations.http import OperationsServer, default_checks, start_operations
from app.runtime.heap import freeze_startup_heap, thaw_heap
from app.runtime.logs import get_logger
from app.runtime.state import WorkerState
from app.service.batch_lane import BatchLane
from app.service.dispatch import Dispatcher
from app.service.insights import InsightService
from app.service.lane_runner import LaneRunner
from app.service.model_calls import ModelCaller
from app.settings import Inbound, Settings, SettingsError

if TYPE_CHECKING:
    from app.bootstrap.worker import Worker

__all__ = ["Running", "start"]

log = get_logger("acp.groq_worker")

# How long a stopping worker tries to hand back what it holds (Redis may be the reason).
_HAND_BACK_SECONDS = 5.0
# How long a worker with the batch lane off looks for requests a previous one left there.
_LANE_CHECK_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Running:
    """What ``start`` built, for tests and the demo to look at."""

    llm: LLM
    model: ModelCaller
    service: InsightService
    operations: OperationsServer
    recovery: PendingRecovery | None  # None with INBOUND=kafka
    lane: BatchLane | None
    lane_runner: LaneRunner | None
    batch_api: BatchAPI | None


@contextlib.asynccontextmanager
async def start(worker: Worker, *, process_index: int = 0) -> AsyncIterator[Running]:
    """Build and start what runs (the broker starts after this, and stops before the
    teardown): the event path, the operations port, the background tasks."""
    settings, state = worker.settings, worker.state
    async with contextlib.AsyncExitStack() as stack:  # taken down in reverse order
        stack.callback(log.info, "worker_stopped", consumer=settings.worker_id)
        stack.callback(thaw_heap)
        stack.push_async_callback(worker.redis.aclose)
        path = await stack.enter_async_context(serve_events(worker))
        llm, model, service, lane = path.llm, path.model, path.service, path.lane
        # Before waiting for Redis: /health/live answers (and /ready says 503) meanwhile.
        checks = default_checks(
            settings,
            worker.redis,
            subscriber_running=lambda: worker.running_brokers,
            breaker_open=model.breaker_open,
            llm=llm,
            redis_refusal=lambda: state.redis_refusal,
        )
        if worker.kafka is not None:  # the Kafka group's membership, not the Redis group's
            checks = [check for check in checks if check.name != "redis_group"]
            checks += kafka_checks(worker.kafka, worker.redis, lambda: worker.running_brokers)
        operations = await start_operations(
            settings,
            worker.redis,
            worker.metrics,
            subscriber_running=lambda: worker.running_brokers,
            breaker_open=model.breaker_open,
            llm=llm,
            redis_refusal=lambda: state.redis_refusal,
            process_index=process_index,
            checks=checks,
        )
        stack.push_async_callback(operations.stop)
        await wait_for_redis(worker.redis, settings)
        if worker.kafka is not None:
            await wait_for_kafka(settings, state)
        recovery = None
        if worker.routes.subscriber is not None:  # INBOUND=redis
            recovery = PendingRecovery(
                RedisClaims(
                    worker.redis,
                    settings.insight_stream,
                    settings.insight_group,
                    settings.worker_id,
                ),
                settings,
                subscriber=worker.routes.subscriber,
                rejections=path.rejections,
                state=state,
            )
            await recovery.prepare()
            stack.push_async_callback(_hand_back, recovery)
        batch_api, lane_runner = await build_lane_runner(worker, lane, service)
        if batch_api is not None:
            stack.push_async_callback(batch_api.aclose)
        tasks = background_tasks(worker, path, recovery, lane_runner)
        stack.push_async_callback(_cancel, tasks)
        if path.dispatcher is not None:  # after the broker drained: the jobs running here
            stack.push_async_callback(_drain, path.dispatcher, state, settings)
        # Last, before the subscriber reads: what exists now lives as long as the process.
        log.debug("startup_heap_frozen", objects=freeze_startup_heap())
        yield Running(llm, model, service, operations, recovery, lane, lane_runner, batch_api)


async def build_lane_runner(
    worker: Worker, lane: BatchLane | None, service: InsightService
) -> tuple[BatchAPI | None, LaneRunner | None]:
    """The lane's submitter and poller, when the lane is on or has requests left in it."""
    if lane is None or not await _lane_has_work(lane):
        return None, None
    try:
        api = worker.fakes.batch_api or build_batch_api(worker.settings)
    except SettingsError as exc:
        log.error("batch_lane_without_api", error=str(exc))
        return None, None
    settings = worker.settings

    async def group_lag() -> int | None:
        info = await group_info(worker.redis, settings.insight_stream, settings.insight_group)
        return info.lag if info is not None else None

    runner = LaneRunner(
        settings,
        lane=lane,
        api=api,
        metrics=worker.metrics,
        state=worker.state,
        lag=group_lag,
        tick_seconds=worker.fakes.lane_tick_seconds,
        lock_ttl_seconds=settings.groq_batch_lock_seconds,
    )
    return api, runner


def background_tasks(
    worker: Worker,
    path: EventPath,
    recovery: PendingRecovery | None,
    lane_runner: LaneRunner | None,
) -> list[asyncio.Task[Any]]:
    """The loops beside the subscriber; each starts once the broker runs (Kafka: the
    commit loop, and the batch lane's runner)."""
    started = worker.state.started

    def once_started(loop: Callable[[], Awaitable[Any]], name: str) -> asyncio.Task[Any]:
        async def run() -> None:
            await started.wait()
            await loop()

        return asyncio.create_task(run(), name=name)

    if worker.kafka is not None:
        log.info(
            "kafka_inbound",
            topic=worker.settings.kafka_topic,
            group=worker.settings.insight_group,
            order="partition order; EVENT_ORDER applies to the Redis inbound only",
        )
        kafka_tasks = [
            start_commit_loop(worker.kafka, started),
            start_lag_sampler(worker.kafka, worker.metrics, started),
        ]
        if lane_runner is not None:
            kafka_tasks.append(once_started(lane_runner.run, "batch-lane"))
        return kafka_tasks
    assert recovery is not None
    tasks = [
        once_started(recovery.run, "pending-recovery"),
        start_retention(worker.redis, worker.settings, worker.metrics),
    ]
    if path.dispatcher is not None:
        dispatcher = path.dispatcher
        tasks.append(once_started(partial(dispatcher.run, path.service.process_job), "dispatch"))
        tasks.append(
            once_started(partial(dispatcher.keep, path.rejections.give_up_job), "scheduler-upkeep")
        )
    if path.lookahead is not None:
        tasks.append(once_started(path.lookahead.run, "look-ahead"))
    if lane_runner is not None:
        tasks.append(once_started(lane_runner.run, "batch-lane"))
    return tasks


async def wait_for_redis(redis: RedisClient, settings: Settings) -> None:
    """Create the group at 0 (MKSTREAM) before the subscriber starts; wait out an outage.
    With INBOUND=kafka only the outage: no stream of Redis is read."""
    delay = 0.5
    while True:
        try:
            if settings.inbound is Inbound.KAFKA:
                await redis.ping()
                return
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


async def _lane_has_work(lane: BatchLane) -> bool:
    """The lane is on, or off with requests left in it (answered, then it stays quiet)."""
    if lane.policy.enabled:
        return True
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
    return True


async def _hand_back(recovery: PendingRecovery) -> None:
    # In-flight events are done: what this consumer still holds goes to the others now.
    # Bounded: with Redis away the entries simply go idle and are claimed as before.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_HAND_BACK_SECONDS):
            await recovery.hand_back()


async def _drain(dispatcher: Dispatcher, state: WorkerState, settings: Settings) -> None:
    # Within what SHUTDOWN_TIMEOUT_SECONDS leaves once the broker drained its handlers.
    given = await dispatcher.drain(state.left_of(settings.shutdown_timeout_seconds))
    if given:
        log.info("jobs_handed_back", jobs=given, note="back in the scheduler, no delivery counted")


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
