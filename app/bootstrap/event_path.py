"""The units one event goes through (``app/service/``), wired to this worker's store.

Built when the app starts (the model provider may need the running loop), and put where
the handlers find it: the service in the broker's context.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from app.adapters.insight_stream import announce
from app.adapters.redis_cluster_store import RedisClusterInsightStore
from app.adapters.redis_lane import RedisLaneStore
from app.adapters.redis_lookahead import RedisStreamAhead
from app.adapters.redis_scheduler import RedisScheduler
from app.adapters.redis_store import RedisInsightStore
from app.bootstrap.kafka import kafka_path
from app.bootstrap.providers import build_llm
from app.domain.batch import LanePolicy
from app.domain.breaker import CircuitBreaker
from app.domain.insight_stream import insight_created_fields
from app.domain.insights import InsightCreated, InsightRecord
from app.domain.ports import LLM, InsightStore
from app.domain.prompt import build_insight_prompt
from app.domain.scheduling import EventOrder, TenantWeights
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing
from app.service.admission import Admitter
from app.service.batch_lane import BatchLane
from app.service.dead_letters import DeadLetters
from app.service.dispatch import Dispatcher, Slots
from app.service.insights import InsightService
from app.service.lookahead import Lookahead
from app.service.model_calls import ModelCaller
from app.service.prompting import Prompter
from app.service.rejections import Rejections
from app.service.reports import Reports
from app.service.spend import Spend
from app.service.store_steps import StoreSteps
from app.service.writing import InsightWriter
from app.settings import Inbound, Settings

if TYPE_CHECKING:
    from app.bootstrap.worker import Worker

__all__ = ["EventPath", "serve_events"]

# The look-ahead reads past the group's position once more than twice its margin (what
# the subscriber's next reads take) waits unread, and at least this many.
_LOOKAHEAD_MIN_LAG = 256
# EVENT_ORDER=fifo: how often a process looks for jobs a priority deployment left waiting.
_LEFTOVERS_POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class EventPath:
    """The model and the units an event goes through (the service and the rejections in
    the broker's context, where the handlers find them)."""

    llm: LLM
    model: ModelCaller
    service: InsightService
    rejections: Rejections
    lane: BatchLane | None
    dispatcher: Dispatcher | None  # on a single Redis: what waits in the scheduler, run
    lookahead: Lookahead | None  # EVENT_ORDER=priority


@contextlib.asynccontextmanager
async def serve_events(worker: Worker) -> AsyncIterator[EventPath]:
    """The model provider and the event path, put where the handlers find it; no I/O. The
    provider is closed on exit."""
    settings, state = worker.settings, worker.state
    llm = worker.fakes.llm or build_llm(
        settings, redis=worker.redis, metrics=worker.metrics, stopping=state.stopping
    )
    try:
        model = build_model_caller(settings, llm, worker.metrics, state, worker.tracing)
        path = build_event_path(worker, model)
        worker.broker.context.set_global("service", path.service)
        worker.broker.context.set_global("rejections", path.rejections)
        if worker.kafka is not None and worker.kafka_broker is not None:
            kafka = kafka_path(
                _event_settings(settings),
                worker.kafka,
                worker.redis,
                path.rejections,
                state,
                worker.tracing,
            )
            for context in (worker.broker.context, worker.kafka_broker.context):
                context.set_global("service", path.service)
                context.set_global("kafka", kafka)
        yield path
    finally:
        await llm.aclose()


def build_model_caller(
    settings: Settings,
    llm: LLM,
    metrics: Metrics,
    state: WorkerState,
    tracing: Tracing | None = None,
) -> ModelCaller:
    breaker = CircuitBreaker(
        threshold=settings.breaker_failure_threshold, cooldown=settings.breaker_cooldown_seconds
    )
    return ModelCaller(
        settings, llm=llm, metrics=metrics, state=state, breaker=breaker, tracing=tracing
    )


def build_event_path(worker: Worker, model: ModelCaller) -> EventPath:
    """The units one event goes through (``app/service/``), wired to this worker's store."""
    settings, metrics, state = _event_settings(worker.settings), worker.metrics, worker.state
    store = worker.fakes.store or build_store(worker)
    dispatcher = build_dispatcher(worker, store)
    steps = StoreSteps(metrics, state)
    reports = Reports(
        metrics,
        tracing=worker.tracing,
        span_attributes={
            "messaging.destination.name": settings.insight_stream,
            "messaging.consumer.group.name": settings.insight_group,
            "messaging.client.id": settings.worker_id,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        },
    )
    letters = DeadLetters(
        store,
        steps,
        metrics,
        max_event_bytes=settings.max_event_bytes,
        dlq_max_entries=settings.dlq_max_entries,
    )
    writer = InsightWriter(
        store,
        steps,
        publish_created=partial(announce, worker.redis),
        spend=Spend(settings.groq_price_table, metrics),
        metrics=metrics,
        max_output_chars=settings.max_output_chars,
        redact_pii=settings.prompt_redact_pii,
        tracing=worker.tracing,
    )
    build_prompt = worker.fakes.build_prompt or partial(
        build_insight_prompt,
        redact_pii=settings.prompt_redact_pii,
        max_chars=settings.max_prompt_chars,
    )
    lane = build_lane(worker, model, writer, letters, reports, steps)
    priority = dispatcher is not None and settings.event_order is EventOrder.PRIORITY
    admitter = Admitter(
        store,
        steps,
        letters,
        metrics,
        budget=settings.insight_budget_per_hour_per_tenant,
        dispatcher=dispatcher if priority else None,
        weights=TenantWeights(settings.tenant_weights),
        reports=reports,
    )
    service = InsightService(
        settings,
        store=store,
        steps=steps,
        admitter=admitter,
        prompter=Prompter(build_prompt, metrics),
        model=model,
        writer=writer,
        letters=letters,
        reports=reports,
        metrics=metrics,
        state=state,
        lane=lane,
    )
    rejections = Rejections(
        letters,
        reports,
        stream=settings.insight_stream,
        group=settings.insight_group,
        max_deliveries=settings.max_deliveries,
    )
    lookahead = build_lookahead(worker, store, service) if priority else None
    return EventPath(model.llm, model, service, rejections, lane, dispatcher, lookahead)


def build_lookahead(worker: Worker, store: InsightStore, service: InsightService) -> Lookahead:
    """EVENT_ORDER=priority: urgent events found ahead of a long lag, scheduled at once."""
    settings = worker.settings
    assert isinstance(store, RedisInsightStore)  # as the dispatcher's
    stream = RedisStreamAhead(
        store.redis,
        stream=settings.insight_stream,
        group=settings.insight_group,
        margin=4 * settings.read_count,
    )
    return Lookahead(
        stream,
        service.look_ahead,
        worker.state,
        worker.metrics,
        max_event_bytes=settings.max_event_bytes,
        min_lag=max(_LOOKAHEAD_MIN_LAG, 8 * settings.read_count),
    )


def build_dispatcher(worker: Worker, store: InsightStore) -> Dispatcher | None:
    """This process's model slots, fed by the scheduler in Redis (its picks ride in the
    store's transactions). With EVENT_ORDER=fifo nothing is scheduled, but what a
    priority deployment left waiting is still run (looked for every few seconds): an
    operator who switches to fifo strands no event. None with a store of a test that has
    no scheduler (and on a cluster, where the scheduler does not run)."""
    settings = worker.settings
    if not isinstance(store, RedisInsightStore):
        return None
    if settings.inbound is Inbound.KAFKA:  # Kafka: partition order (app/bootstrap/kafka.py)
        return None
    priority = settings.event_order is EventOrder.PRIORITY
    scheduler = RedisScheduler(
        store.redis,
        commit=store.commit,
        consumer=settings.worker_id,
        idle_seconds=settings.claim_idle_seconds,
    )
    return Dispatcher(
        scheduler,
        Slots(settings.worker_concurrency),
        worker.state,
        idle_seconds=settings.claim_idle_seconds,
        max_deliveries=settings.max_deliveries,
        **({} if priority else {"idle_poll_seconds": _LEFTOVERS_POLL_SECONDS}),
    )


def build_store(worker: Worker) -> InsightStore:
    """The insight store of the mode: one script per step on one Redis, single-slot steps
    on a cluster."""
    dlq_max = worker.settings.dlq_max_entries
    if isinstance(worker.redis, RedisCluster):
        resume = partial(_announce, worker.redis)
        return RedisClusterInsightStore(worker.redis, announce=resume, dlq_max_entries=dlq_max)
    return RedisInsightStore(worker.redis, dlq_max_entries=dlq_max)


def build_lane(
    worker: Worker,
    model: ModelCaller,
    writer: InsightWriter,
    letters: DeadLetters,
    reports: Reports,
    steps: StoreSteps,
) -> BatchLane | None:
    """The batch lane, wired even when off (no event takes it) so that requests a previous
    configuration left there are still answered. Not in a cluster: its steps span slots
    (the settings refuse the lane with REDIS_MODE=cluster)."""
    settings = worker.settings
    if isinstance(worker.redis, RedisCluster):
        return None
    return BatchLane(
        LanePolicy(settings.groq_batch_severities, settings.groq_batch_when_lag_above),
        RedisLaneStore(worker.redis, dlq_max_entries=settings.dlq_max_entries),
        model=model,
        writer=writer,
        letters=letters,
        reports=reports,
        steps=steps,
        max_completion_tokens=settings.groq_max_completion_tokens,
        reasoning_effort=settings.groq_reasoning_effort,
    )


def _event_settings(settings: Settings) -> Settings:
    """The settings the event path sees: with INBOUND=kafka, its entries are the records
    of ``kafka:<topic>`` (a name no Redis key has: the store's XACK of one does nothing)."""
    if settings.inbound is not Inbound.KAFKA:
        return settings
    return settings.model_copy(update={"insight_stream": settings.kafka_stream_ref})


async def _announce(redis: Any, record: InsightRecord) -> Any:
    """InsightCreated for a stored record (a cluster write resumed after a crash: the
    event's trace context is gone with the process that wrote it)."""
    return await announce(
        redis, insight_created_fields(InsightCreated.announcing(record), {}), None
    )
