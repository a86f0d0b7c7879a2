"""The look-ahead on a real Redis: urgent events behind a long unread backlog are scheduled
before the group reaches them, answered first, and each event still has one outcome.

The worker runs in this process against the loopback Groq, whose first answers are held so
that the flood waits; what the look-ahead did is read from Redis and the worker's metrics.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.keys import Keys
from tests.conftest import running
from tests.integration.test_scheduler import asked, consumed, event, until, worker_of

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes("standalone")]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"
FLOOD = 1500  # far past the unread entries the look-ahead waits for (256)
NO_BUDGET = {"insight_budget_per_hour_per_tenant": 1_000_000}


async def write_many(redis: Any, bodies: list[dict[str, Any]]) -> None:
    """Pipelined, as a gateway under load writes."""
    import json

    async with redis.pipeline(transaction=False) as pipe:
        for body in bodies:
            pipe.xadd(STREAM, {"payload": json.dumps(body)})
        await pipe.execute()


def looked_ahead(worker: Any) -> float:
    return float(worker.metrics.lookahead_scheduled._value.get())


async def entries_read(redis: Any) -> int:
    groups = await redis.xinfo_groups(STREAM)
    return int(groups[0]["entries-read"] or 0) if groups else 0


async def test_urgent_events_behind_an_unread_flood_go_first_with_one_outcome_each(
    redis, fake_groq, make_settings
):
    """6,000 low events unread, then 3 critical ones: the look-ahead schedules the critical
    ones while most of the flood is still unread; they are asked right after the two held
    calls; every event ends with one outcome (no duplicate counted for the critical ones'
    deliveries)."""
    fake_groq.script.extend({"hold": True} for _ in range(2))
    await write_many(redis, [event(f"low-{n}") for n in range(FLOOD)])
    await write_many(redis, [event(f"crit-{n}", "globex", "critical") for n in range(3)])
    worker = worker_of(make_settings, fake_groq, worker_concurrency=2, **NO_BUDGET)
    async with running(worker.app):
        await until(lambda: looked_ahead(worker) == 3, what="the critical events looked ahead")
        assert await entries_read(redis) < FLOOD, "scheduled before the group reached them"
        assert await redis.scard(Keys.SCHED_AHEAD) == 3
        fake_groq.release()
        await until(
            lambda: consumed(worker, "enriched") == FLOOD + 3, what="every insight", within=60
        )
        [group] = await redis.xinfo_groups(STREAM)
    order = asked(fake_groq)
    assert order[2:5] == ["crit-0", "crit-1", "crit-2"]  # right after the two held calls
    assert consumed(worker, "duplicate") == 0  # their deliveries were acked without one
    assert group["pending"] == 0
    assert group["lag"] == 0
    assert await redis.scard(Keys.SCHED_AHEAD) == 0  # every mark met its delivery
    assert await redis.hlen(Keys.SCHED_JOBS) == 0
    assert await redis.llen("acp:groq:dlq") == 0


async def test_a_look_ahead_refused_for_the_budget_is_counted_once(redis, fake_groq, make_settings):
    """One enrichment left of a tenant's hour: of its two critical events behind the
    flood, the look-ahead takes the first; the second is refused, and its refusal counts
    once, at its delivery (the look-ahead gave its count back)."""
    budget = 30
    await redis.set(Keys.rate_limit("tiny"), budget - 1, ex=3600)
    fake_groq.script.extend({"hold": True} for _ in range(2))
    await write_many(redis, [event(f"low-{n}", f"flood-{n % 50}") for n in range(FLOOD)])
    await write_many(redis, [event(f"crit-{n}", "tiny", "critical") for n in range(2)])
    worker = worker_of(
        make_settings, fake_groq, worker_concurrency=2, insight_budget_per_hour_per_tenant=budget
    )
    async with running(worker.app):
        await until(lambda: looked_ahead(worker) == 1, what="the first looked ahead")
        assert int(await redis.get(Keys.rate_limit("tiny"))) == budget  # the refusal: none
        fake_groq.release()
        await until(
            lambda: consumed(worker, "enriched") == FLOOD + 1, what="every insight", within=60
        )
        await until(lambda: consumed(worker, "rate_limited") == 1, what="the second's delivery")
    assert int(await redis.get(Keys.rate_limit("tiny"))) == budget + 1  # counted once
    assert await redis.exists(Keys.insight("crit-0")) == 1
    assert await redis.exists(Keys.insight("crit-1")) == 0


async def test_a_copy_of_an_event_looked_ahead_is_its_duplicate(redis, fake_groq, make_settings):
    """The gateway wrote a critical event twice behind the flood: the look-ahead schedules
    the first entry; the copy is a duplicate when delivered; one insight, one model call."""
    fake_groq.script.extend({"hold": True} for _ in range(2))
    await write_many(redis, [event(f"low-{n}") for n in range(FLOOD)])
    await write_many(redis, [event("crit", "globex", "critical")] * 2)
    worker = worker_of(make_settings, fake_groq, worker_concurrency=2, **NO_BUDGET)
    async with running(worker.app):
        await until(lambda: looked_ahead(worker) == 1, what="the first entry looked ahead")
        fake_groq.release()
        await until(
            lambda: consumed(worker, "enriched") == FLOOD + 1, what="every insight", within=60
        )
        await until(lambda: consumed(worker, "duplicate") == 1, what="the copy's delivery")
    assert asked(fake_groq).count("crit") == 1
