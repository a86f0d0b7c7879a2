"""Pending entries re-enter: own ones after a restart, idle ones of dead consumers, poison."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from app.bootstrap import build_worker
from tests.conftest import running
from tests.integration.test_worker_end_to_end import GROUP, STREAM, event, settle, xadd_raw

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes]


async def leave_pending(redis, consumer: str, count: int) -> list[bytes]:
    """Deliver ``count`` entries to ``consumer`` and never ack them (a crashed worker)."""
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    read = await redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in read[0][1]]


async def test_a_restart_under_the_same_id_processes_its_own_pending_entries(
    redis, fake_groq, make_settings
):
    """Entries pending on our WORKER_ID at start are processed first, not left forever."""
    for n in range(4):
        await xadd_raw(redis, event(n))
    pending = await leave_pending(redis, "test-worker", 4)
    assert len(pending) == 4
    worker = build_worker(make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=3600))
    async with running(worker.app):
        await settle(redis, 4, worker.metrics)
    assert fake_groq.stats.requests == 4
    assert await redis.exists(*[f"acp:groq:insight:evt-{n}" for n in range(4)]) == 4


@pytest.mark.cluster_smoke
async def test_entries_of_a_dead_consumer_are_claimed_after_the_idle_time(
    redis, fake_groq, make_settings
):
    """Another consumer's entries idle past CLAIM_IDLE_SECONDS are claimed and enriched."""
    for n in range(3):
        await xadd_raw(redis, event(n))
    await leave_pending(redis, "dead-worker", 3)
    await xadd_raw(redis, event(99))  # a new entry, read as usual meanwhile
    worker = build_worker(make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=0.5))
    async with running(worker.app):
        await settle(redis, 4, worker.metrics)
    consumers = {
        c["name"].decode(): c["pending"] for c in await redis.xinfo_consumers(STREAM, GROUP)
    }
    assert consumers["dead-worker"] == 0
    assert fake_groq.stats.requests == 4


@pytest.mark.cluster_smoke
async def test_an_entry_delivered_too_often_is_dead_lettered_as_poison(
    redis, fake_groq, make_settings
):
    """Past MAX_DELIVERIES deliveries an entry goes to the DLQ with reason max_deliveries."""
    entry = await xadd_raw(redis, event(1))
    await leave_pending(redis, "dead-worker", 1)
    for _ in range(3):  # three more deliveries by claims: 4 in all
        await redis.xclaim(STREAM, GROUP, "dead-worker", min_idle_time=0, message_ids=[entry])
    worker = build_worker(
        make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=0.3, max_deliveries=4)
    )
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    letters = [json.loads(x) for x in await redis.lrange("acp:groq:dlq", 0, -1)]
    assert [letter["reason"] for letter in letters] == ["max_deliveries"]
    assert letters[0]["entry_id"] == entry
    assert letters[0]["deliveries"] == 5
    assert json.loads(letters[0]["payload"])["event_id"] == "evt-1"
    assert fake_groq.stats.requests == 0


async def test_a_slow_call_is_not_claimed_away_by_another_worker(redis, fake_groq, make_settings):
    """An entry its owner is still working on is kept fresh: no second worker steals it."""
    fake_groq.script.append({"delay": 2.5})
    await xadd_raw(redis, event(1))
    first = build_worker(
        make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=0.6, worker_id="w-1")
    )
    second = build_worker(
        make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=0.6, worker_id="w-2"),
        configure_logs=False,
    )
    async with running(first.app):
        deadline = time.monotonic() + 5
        while fake_groq.stats.requests == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        async with running(second.app):
            await settle(redis, 1, first.metrics)
            await asyncio.sleep(1.0)  # the second worker had several claim rounds
    assert fake_groq.stats.requests == 1
    assert second.metrics.events_consumed.labels(result="enriched")._value.get() == 0


async def test_an_open_breaker_holds_new_events_in_the_stream(redis, fake_groq, make_settings):
    """During a model outage the breaker opens: few dead letters, the rest wait, then finish."""
    fake_groq.models["openai/gpt-oss-20b"] = {"status": 503}
    for n in range(40):
        await xadd_raw(redis, event(n))
    worker = build_worker(
        make_settings(
            groq_base_url=fake_groq.base_url,
            worker_concurrency=4,
            breaker_failure_threshold=3,
            breaker_cooldown_seconds=0.5,
        )
    )
    async with worker.running() as live:
        deadline = time.monotonic() + 10
        while not live.model.breaker_open() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert live.model.breaker_open()
        await asyncio.sleep(1.5)  # outage goes on: probes fail, nothing floods the DLQ
        dead_during_outage = await redis.llen("acp:groq:dlq")
        assert dead_during_outage <= 4  # only the events in flight when it opened
        del fake_groq.models["openai/gpt-oss-20b"]  # the model is back
        await settle(redis, 40, worker.metrics, within=30)
    assert worker.metrics.breaker_state._value.get() == 0
    enriched = worker.metrics.events_consumed.labels(result="enriched")._value.get()
    assert enriched + dead_during_outage == 40
    assert enriched >= 36


async def test_entries_waiting_for_a_slot_are_not_claimed_away(redis, fake_groq, make_settings):
    """Entries read ahead while every slot is busy stay fresh: no other worker redoes them.

    In the stream's order (EVENT_ORDER=fifo): with the scheduler, such entries are not
    held at all (they wait in it; tests/integration/test_scheduler.py)."""
    fake_groq.latency = 1.5
    for n in range(6):
        await xadd_raw(redis, event(n))
    both = {  # two slots, four entries read at a time, claims after 0.6 s idle
        "groq_base_url": fake_groq.base_url,
        "worker_concurrency": 2,
        "read_batch_size": 4,
        "claim_idle_seconds": 0.6,
        "event_order": "fifo",  # entries wait in the stream, held by the reader
    }
    busy = build_worker(make_settings(worker_id="w-busy", **both))
    other = build_worker(make_settings(worker_id="w-other", **both), configure_logs=False)
    async with running(busy.app):
        deadline = time.monotonic() + 5
        while fake_groq.stats.requests < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held = {
            c["name"].decode(): c["pending"] for c in await redis.xinfo_consumers(STREAM, GROUP)
        }
        assert held["w-busy"] == 4  # two calls in flight, two entries waiting for a slot
        async with running(other.app):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = sum(
                    w.metrics.events_consumed.labels(result="enriched")._value.get()
                    for w in (busy, other)
                )
                if done >= 6 and (await redis.xpending(STREAM, GROUP))["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a few more claim rounds: nothing left to take
    assert busy.metrics.events_consumed.labels(result="enriched")._value.get() == 4
    assert other.metrics.events_consumed.labels(result="enriched")._value.get() == 2
    assert fake_groq.stats.requests == 6  # every event was sent to the model once
