"""Baseline 2: the straightforward FastStream app, as FastStream's documentation writes one.

One ``@broker.subscriber`` on the stream with a consumer group, a pydantic model as the
handler's argument (the gateway's ``payload`` field is a JSON string: ``Json[AuditEvent]``),
the broker's Redis client injected (``faststream.redis.annotations.Redis``), a publisher for
InsightCreated, ``RedisPrometheusMiddleware`` for metrics and FastStream's own log lines.
No ``max_workers``, no ``max_records``: one message at a time, and a backlog is read whole.
FastStream acks after the handler returns (its default ack policy with a group).

Per event: the same pydantic validation, budget and duplicate pipeline, model call, parsing
and sanitising as the bare baseline (``bench.common``), one ``MULTI/EXEC`` for the insight
keys, then FastStream's publish (``XADD``) and ack (``XACK``): four round trips.

FastStream creates a consumer group at ``$`` (skipping a backlog): the group is created at
``0`` on startup, before the subscriber starts, as the worker does.

Run: ``faststream run bench.baseline_faststream:app`` with the worker's environment.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import groq
from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import Redis
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Json
from redis.exceptions import ResponseError

from app.domain.events import AuditEvent
from bench.common import (
    AGENT_KEEP,
    BUDGET_WINDOW,
    GROUP,
    INSIGHT_TTL,
    INSIGHTS_STREAM,
    STREAM,
    STREAM_MAXLEN,
    TIMELINE,
    TIMELINE_KEEP,
    BaselineConfig,
    completion_params,
    insight_created,
    insight_record,
)

config = BaselineConfig()
logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # as the worker: no line per request

registry = CollectorRegistry()
consumed = Counter("acp_groq_events_consumed", "Events by outcome", ["result"], registry=registry)

broker = RedisBroker(config.redis_url, middlewares=[RedisPrometheusMiddleware(registry=registry)])
app = FastStream(broker)
insights = broker.publisher(stream=StreamSub(INSIGHTS_STREAM, maxlen=STREAM_MAXLEN))
llm = groq.AsyncGroq(
    api_key=config.groq_api_key,
    base_url=config.groq_base_url,
    max_retries=0,
    timeout=30.0,
    http_client=groq.DefaultAioHttpClient() if config.transport == "aiohttp" else None,
)


class Entry(BaseModel):
    """The gateway's stream entry: one field, the event as a JSON string."""

    payload: Json[AuditEvent]


@app.on_startup
async def create_group_at_zero() -> None:
    from redis.asyncio import Redis as Client

    client = Client.from_url(config.redis_url)
    with contextlib.suppress(ResponseError):
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await client.aclose()


@app.after_shutdown
async def close_llm() -> None:
    await llm.close()


@broker.subscriber(stream=StreamSub(STREAM, group=GROUP, consumer=config.consumer))
async def handle(entry: Entry, redis: Redis) -> None:
    event = entry.payload
    started = time.monotonic()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(f"acp:groq:insight:{event.event_id}")
        pipe.incr(f"acp:groq:rate_limit:{event.tenant_id}")
        pipe.expire(f"acp:groq:rate_limit:{event.tenant_id}", BUDGET_WINDOW, nx=True)
        exists, used, _ = await pipe.execute()
    if exists or used > config.budget:
        consumed.labels(result="duplicate" if exists else "rate_limited").inc()
        return
    params = completion_params(event)
    completion: Any = None
    for attempt in range(config.max_attempts):
        try:
            completion = await llm.chat.completions.create(**params)
            break
        except (groq.APIConnectionError, groq.RateLimitError, groq.InternalServerError):
            if attempt + 1 == config.max_attempts:
                raise
    text = completion.choices[0].message.content or ""
    model = completion.model or params["model"]
    record, record_json = insight_record(
        event,
        text=text,
        model=model,
        started=started,
        max_chars=config.max_output_chars,
        usage=completion.usage,
    )
    agent_key = f"acp:groq:insights:by_agent:{event.agent_id}"
    tenant_key = f"acp:groq:insights:by_tenant:{event.tenant_id}"
    score = event.epoch_seconds
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(f"acp:groq:insight:{event.event_id}", record_json, ex=INSIGHT_TTL)
        pipe.zadd(TIMELINE, {event.event_id: score})
        pipe.zremrangebyrank(TIMELINE, 0, -(TIMELINE_KEEP + 1))
        pipe.zadd(tenant_key, {event.event_id: score})
        pipe.zremrangebyrank(tenant_key, 0, -(TIMELINE_KEEP + 1))
        pipe.lpush(agent_key, event.event_id)
        pipe.ltrim(agent_key, 0, AGENT_KEEP - 1)
        await pipe.execute()
    await insights.publish(insight_created(record))
    consumed.labels(result="enriched").inc()
