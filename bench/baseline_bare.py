"""Baseline 1: the best hand-written asyncio loop on redis-py and the groq SDK, no framework.

What an engineer tuning a worker by hand ends with, doing the contract's reads, model calls
and writes, no more:

* uvloop; ``XGROUP CREATE acp:groq_queue <group> 0 MKSTREAM``, then ``XREADGROUP COUNT <free
  slots> BLOCK 1000`` in a loop: at most ``WORKER_CONCURRENCY`` events in flight (a
  semaphore of that many slots), and the read asks only for as many entries as there are
  free slots, so nothing read waits in the process;
* per event: pydantic validation of the payload straight from the bytes
  (``AuditEvent.model_validate_json``, the worker's model); one pipeline before the model
  call: ``EXISTS`` the insight (a redelivery is a duplicate: no model call) and the
  tenant's hourly budget as ``INCR`` + ``EXPIRE ... NX``;
* the model call: the SDK's ``chat.completions.create`` on its aiohttp transport
  (``AsyncGroq(http_client=DefaultAioHttpClient(), max_retries=0)``, the pool sized to the
  concurrency), up to ``GROQ_MAX_ATTEMPTS`` attempts on transient errors;
* the answer parsed and sanitised (``app.domain``), then every write of the contract in one
  ``MULTI/EXEC``: the insight ``SET EX``, the timeline and tenant ``ZADD`` + trims, the
  agent ``LPUSH`` + ``LTRIM``, the InsightCreated ``XADD MAXLEN ~ 10000``;
* XACKs batched: the entries whose writes are done are acknowledged together, one ``XACK``
  with many ids per pass of the event loop (after their ``EXEC``: the ack comes after the
  writes, as the contract asks);
* an invalid entry: ``LPUSH`` on the DLQ and ``XACK`` in one ``MULTI/EXEC``;
* a Prometheus counter per outcome and a latency histogram per model (children cached,
  not served), and one JSON log line per event at INFO (stdlib ``logging`` to stderr).

It is not the worker (no claim loop, no breaker, no lease or owner key, no health server):
it is the floor of what the same reads, calls and writes cost in Python, written with care.
``BENCH_TRANSPORT=httpx`` runs the SDK on its default httpx transport instead of aiohttp.

Run: ``python -m bench.baseline_bare`` with the worker's environment (``REDIS_URL``,
``GROQ_BASE_URL``, ``GROQ_API_KEY``, ``WORKER_CONCURRENCY``, ``WORKER_ID``, ``LOG_LEVEL``,
``INSIGHT_BUDGET_PER_HOUR_PER_TENANT``). SIGTERM stops reading and lets in-flight events end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from typing import Any

import groq
import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.domain.events import AuditEvent
from bench.common import (
    AGENT_KEEP,
    BUDGET_WINDOW,
    DLQ,
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
    utc_now,
)

log = logging.getLogger("bench.bare")

_TRANSIENT = (groq.APIConnectionError, groq.RateLimitError, groq.InternalServerError)

REGISTRY = CollectorRegistry()
CONSUMED = Counter("acp_groq_events_consumed", "Events by outcome", ["result"], registry=REGISTRY)
LATENCY = Histogram("acp_groq_event_latency_seconds", "Event latency", ["model"], registry=REGISTRY)


class AckBatcher:
    """XACKs of entries whose writes are done, sent together: one XACK per loop pass."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.ids: list[bytes] = []
        self.flushing: asyncio.Task[None] | None = None

    def ack(self, entry_id: bytes) -> None:
        self.ids.append(entry_id)
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        while self.ids:
            await asyncio.sleep(0)  # let the events finishing now join this XACK
            ids, self.ids = self.ids, []
            await self.redis.xack(STREAM, GROUP, *ids)

    async def close(self) -> None:
        if self.flushing is not None:
            await self.flushing


class BareWorker:
    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        # redis-py's pool refuses a connection beyond its maximum: one per task in flight,
        # the reader and the ack batcher.
        self.redis = Redis.from_url(config.redis_url, max_connections=config.concurrency + 8)
        http_client = None
        if config.transport == "aiohttp":
            pool = httpx.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            )
            http_client = groq.DefaultAioHttpClient(limits=pool)
        self.llm = groq.AsyncGroq(
            api_key=config.groq_api_key,
            base_url=config.groq_base_url,
            max_retries=0,
            timeout=30.0,
            http_client=http_client,
        )
        self.slots = asyncio.Semaphore(config.concurrency)
        self.free = config.concurrency  # the semaphore's count, for the read's COUNT
        self.tasks: set[asyncio.Task[None]] = set()
        self.acks = AckBatcher(self.redis)
        self.stopping = asyncio.Event()
        self.consumed = {outcome: CONSUMED.labels(result=outcome) for outcome in _OUTCOMES}
        self.latency: dict[str, Any] = {}

    async def run(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        log.warning("bare baseline reading %s as %s", STREAM, self.config.consumer)
        while not self.stopping.is_set():
            await self.slots.acquire()  # at least one free slot before reading
            self.slots.release()
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.config.consumer, {STREAM: ">"}, count=self.free, block=1000
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    await self.slots.acquire()
                    self.free -= 1
                    task = asyncio.create_task(self.handle(entry_id, fields))
                    self.tasks.add(task)
                    task.add_done_callback(self._done)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=30)
        await self.acks.close()
        await self.llm.close()
        await self.redis.aclose()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.free += 1
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("event task failed: %r", task.exception())

    async def handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        started = time.monotonic()
        try:
            event = AuditEvent.model_validate_json(fields[b"payload"])
        except (KeyError, ValidationError) as exc:
            await self.dead_letter(entry_id, fields, f"invalid: {type(exc).__name__}")
            self.finish("dead_lettered", started, entry_id=entry_id.decode())
            return
        cfg = self.config
        budget_key = f"acp:groq:rate_limit:{event.tenant_id}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(f"acp:groq:insight:{event.event_id}")
            pipe.incr(budget_key)
            pipe.expire(budget_key, BUDGET_WINDOW, nx=True)
            exists, used, _ = await pipe.execute()
        if exists or used > cfg.budget:
            self.acks.ack(entry_id)
            self.finish("duplicate" if exists else "rate_limited", started, event=event)
            return
        params = completion_params(event)
        completion = None
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                completion = await self.llm.chat.completions.create(**params)
                break
            except _TRANSIENT:
                if attempt == cfg.max_attempts:
                    break
                await asyncio.sleep(random.uniform(0.25, 0.5) * 2 ** (attempt - 1))
            except groq.APIStatusError:
                break
        if completion is None or not completion.choices:
            await self.dead_letter(entry_id, fields, "llm_exhausted", event=event)
            self.finish("dead_lettered", started, event=event)
            return
        text = completion.choices[0].message.content or ""
        model = completion.model or params["model"]
        record, record_json = insight_record(
            event,
            text=text,
            model=model,
            started=started,
            max_chars=cfg.max_output_chars,
            usage=completion.usage,
        )
        agent_key = f"acp:groq:insights:by_agent:{event.agent_id}"
        tenant_key = f"acp:groq:insights:by_tenant:{event.tenant_id}"
        score = event.epoch_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"acp:groq:insight:{event.event_id}", record_json, ex=INSIGHT_TTL)
            pipe.zadd(TIMELINE, {event.event_id: score})
            pipe.zremrangebyrank(TIMELINE, 0, -(TIMELINE_KEEP + 1))
            pipe.zadd(tenant_key, {event.event_id: score})
            pipe.zremrangebyrank(tenant_key, 0, -(TIMELINE_KEEP + 1))
            pipe.lpush(agent_key, event.event_id)
            pipe.ltrim(agent_key, 0, AGENT_KEEP - 1)
            pipe.xadd(
                INSIGHTS_STREAM,
                {"payload": json.dumps(insight_created(record))},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            await pipe.execute()
        self.acks.ack(entry_id)
        histogram = self.latency.get(model)
        if histogram is None:
            histogram = self.latency[model] = LATENCY.labels(model=model)
        histogram.observe(time.monotonic() - started)
        self.finish("enriched", started, event=event, model=model)

    async def dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], reason: str, event: Any = None
    ) -> None:
        letter = {
            "entry_id": entry_id.decode(),
            "stream": STREAM,
            "fields": {
                k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()
            },
            "reason": reason.split(":")[0],
            "error": reason,
            "attempts": 0,
            "failed_at": utc_now(),
            "event_id": getattr(event, "event_id", None),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(DLQ, json.dumps(letter))
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()

    def finish(self, outcome: str, started: float, *, event: Any = None, **fields: Any) -> None:
        self.consumed[outcome].inc()
        if log.isEnabledFor(logging.INFO):
            line = {
                "event": "event_processed",
                "outcome": outcome,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "timestamp": utc_now(),
                **fields,
            }
            if event is not None:
                line.update(event_id=event.event_id, tenant_id=event.tenant_id)
            log.info(json.dumps(line))


_OUTCOMES = ("enriched", "duplicate", "rate_limited", "dead_lettered")


async def main() -> None:
    config = BaselineConfig()
    logging.basicConfig(level=config.log_level, stream=sys.stderr, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as the worker: no line per request
    worker = BareWorker(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    await worker.run()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())
