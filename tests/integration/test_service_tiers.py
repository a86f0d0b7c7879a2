"""GROQ_SERVICE_TIERS through the real worker, the real groq SDK and the loopback Groq.

While flex is full (498 ``capacity_exceeded``), an urgent event mapped to flex is answered
at once on on_demand, and the others wait, with no dead letter and no attempt spent, until
flex has room again: in place with EVENT_ORDER=fifo, back in the scheduler with priority.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.domain.keys import Keys
from app.service import model_calls
from tests.conftest import running
from tests.integration.test_scheduler import consumed, event, until, worker_of, write
from tests.support.fake_groq import FakeGroq

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes("standalone")]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"
DLQ = "acp:groq:dlq"
TIERS = "critical=on_demand,high=flex,low=flex"


@pytest.fixture(autouse=True)
def quick_flex_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs in this process: its waits for flex, shortened (1 s to 30 s)."""
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_BASE_SECONDS", 0.05)
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_MAX_SECONDS", 0.2)


def tiers_asked(fake: FakeGroq) -> dict[str, list[str | None]]:
    """The tiers each event's requests named, in order, by event."""
    asked: dict[str, list[str | None]] = {}
    for request in fake.requests:
        user = request["messages"][1]["content"]
        name = json.loads(user[user.index("{") : user.rindex("}") + 1])["agent_name"]
        asked.setdefault(name, []).append(request["body"].get("service_tier"))
    return asked


def sample(worker: Any, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("order", ["fifo", "priority"])
async def test_while_flex_is_full_urgent_events_go_on_demand_and_the_others_wait(
    redis, fake_groq: FakeGroq, make_settings, order: str
):
    fake_groq.flex_full = True
    worker = worker_of(
        make_settings,
        fake_groq,
        event_order=order,
        groq_service_tiers=TIERS,
        groq_max_attempts=1,  # a refusal spending an attempt would dead-letter at once
        worker_concurrency=4,
    )
    lows = [event(f"low-{n}") for n in range(3)]
    async with running(worker.app):
        await write(
            redis, *lows, event("high", "globex", "high"), event("crit", "initech", "critical")
        )
        await until(lambda: consumed(worker, "enriched") == 2, what="the urgent insights")
        await until(
            lambda: sample(worker, "acp_groq_capacity_waits_total", severity="low") >= 6,
            what="the low events waiting for flex, twice each",
        )
        assert await redis.llen(DLQ) == 0
        if order == "priority":  # jobs in the scheduler, their slots free, entries acked
            assert await redis.hlen(Keys.SCHED_JOBS) == 3
            [group] = await redis.xinfo_groups(STREAM)
            assert group["pending"] == 0
        else:  # waiting in place, their entries pending
            [group] = await redis.xinfo_groups(STREAM)
            assert group["pending"] == 3

        fake_groq.flex_full = False
        await until(lambda: consumed(worker, "enriched") == 5, what="every insight")
    assert await redis.llen(DLQ) == 0
    asked = tiers_asked(fake_groq)
    assert asked["crit"] == ["on_demand"]
    assert asked["high"] == ["flex", "on_demand"]  # refused, then at once on on_demand
    for n in range(3):
        assert set(asked[f"low-{n}"]) == {"flex"}
        assert len(asked[f"low-{n}"]) >= 2  # refused at least once, then answered
    assert sample(worker, "acp_groq_service_tier_fallbacks_total", severity="high") == 1
    requests = "acp_groq_service_tier_requests_total"
    assert sample(worker, requests, service_tier="flex", result="answered") == 3
    assert sample(worker, requests, service_tier="on_demand", result="answered") == 2
    assert sample(worker, "acp_groq_events_consumed_total", result="dead_lettered") == 0
    if order == "priority":
        assert await redis.exists(Keys.SCHED_JOBS, Keys.SCHED_LATER) == 0
