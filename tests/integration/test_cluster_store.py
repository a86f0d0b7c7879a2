"""The cluster store's step order on a real Redis Cluster: what each crash point leaves.

A crash is a process dying between two steps; here the state a step leaves is built
(or the steps are run up to a point), and the next delivery must complete the event
without a second model call, a second charge or a lost index.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.adapters.redis_cluster_store import RedisClusterInsightStore
from app.bootstrap import build_worker
from app.domain.insights import Insight, InsightRecord
from app.domain.keys import ClusterKeys, Keys
from app.domain.ports import Admission, EntryRef
from tests.conftest import running
from tests.integration.test_failures import consumed, event, settle, xadd_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.redis_modes("cluster"),
    pytest.mark.cluster_smoke,
]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"


def record(event_id: str = "evt-1", tenant_id: str = "acme") -> InsightRecord:
    return InsightRecord(
        event_id=event_id,
        tenant_id=tenant_id,
        agent_id="billing-agent",
        severity="high",
        decision="deny",
        timestamp=1_764_000_001.0,
        model="openai/gpt-oss-120b",
        insight=Insight(summary="s", risk="high", recommendation="r"),
        created_at="2026-11-25T02:20:01.204Z",
        latency_ms=12,
    )


class Announcements:
    def __init__(self) -> None:
        self.records: list[str] = []

    async def __call__(self, record: InsightRecord) -> None:
        self.records.append(record.event_id)


async def pending_entries(
    redis: Any, count: int, consumer: str = "crashed-worker"
) -> list[EntryRef]:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids = [await xadd_event(redis, event(1)) for _ in range(count)]
    await redis.xreadgroup(GROUP, consumer, {STREAM: ">"})
    return [EntryRef(STREAM, GROUP, entry_id) for entry_id in ids]


async def test_a_crash_after_the_insight_is_resumed_without_the_model(redis):
    """Insight stored, indexes not: the redelivery writes the indexes, announces, releases."""
    announced = Announcements()
    store = RedisClusterInsightStore(redis, announce=announced)
    (entry,) = await pending_entries(redis, 1)
    assert await store.admit(event_id="evt-1", tenant_id="acme", budget=5, entry=entry) is (
        Admission.ADMITTED
    )
    # W1 done, then the crash: the insight holds the full record, the lease is still held.
    await redis.set(Keys.insight("evt-1"), record().model_dump_json(), ex=86_400)

    verdict = await store.admit(event_id="evt-1", tenant_id="acme", budget=5, entry=entry)

    assert verdict is Admission.DUPLICATE  # the service acks it: no model call
    assert await redis.zscore(Keys.TIMELINE, "evt-1") == 1_764_000_001.0
    assert await redis.zscore(Keys.by_tenant("acme"), "evt-1") == 1_764_000_001.0
    assert await redis.lrange(Keys.by_agent("billing-agent"), 0, -1) == [b"evt-1"]
    assert announced.records == ["evt-1"]
    assert await redis.exists(ClusterKeys.lease("evt-1")) == 0
    assert await redis.get(Keys.rate_limit("acme")) == b"1"  # charged once, not twice
    # Complete now: one more delivery is a plain duplicate, announced no more.
    assert await store.admit(event_id="evt-1", tenant_id="acme", budget=5, entry=entry) is (
        Admission.DUPLICATE
    )
    assert announced.records == ["evt-1"]


async def test_a_crash_after_the_charge_does_not_charge_the_redelivery(redis):
    """Charged, then the crash before the model answered: the redelivery is admitted free."""
    store = RedisClusterInsightStore(redis, announce=Announcements())
    (entry,) = await pending_entries(redis, 1)
    for _ in range(3):
        verdict = await store.admit(event_id="evt-1", tenant_id="acme", budget=1, entry=entry)
        assert verdict is Admission.ADMITTED
    assert await redis.get(Keys.rate_limit("acme")) == b"1"
    assert 0 < await redis.ttl(Keys.charged("acme")) <= 3600


async def test_concurrent_admissions_never_pass_the_budget(redis):
    """Forty events of one tenant admitted at once against a budget of 7: exactly 7 pass."""
    store = RedisClusterInsightStore(redis, announce=Announcements())
    verdicts = await asyncio.gather(
        *(
            store.admit(event_id=f"evt-{n}", tenant_id="acme", budget=7, entry=None)
            for n in range(40)
        )
    )
    assert verdicts.count(Admission.ADMITTED) == 7
    assert verdicts.count(Admission.RATE_LIMITED) == 33
    # A rate-limited event leaves no owner behind: its id stays free.
    assert await redis.exists(*(ClusterKeys.owner(f"evt-{n}") for n in range(40))) == 7


async def test_a_second_entry_waits_on_a_pending_first_and_a_redelivery_takes_over(redis):
    """The lease on the cluster: a pending holder makes copies duplicates; acked, not."""
    store = RedisClusterInsightStore(redis, announce=Announcements())
    first, copy, replay = await pending_entries(redis, 3)

    async def admit(entry: EntryRef) -> Admission:
        return await store.admit(event_id="evt-1", tenant_id="acme", budget=10, entry=entry)

    assert await admit(first) is Admission.ADMITTED
    assert await admit(copy) is Admission.DUPLICATE  # the first is still pending
    assert await admit(first) is Admission.ADMITTED  # its redelivery keeps the lease
    await store.dead_letter(first, json.dumps({"reason": "llm_exhausted"}))  # acks the first
    assert await admit(replay) is Admission.ADMITTED  # the holder is gone: taken over
    assert await redis.get(ClusterKeys.lease("evt-1")) == replay.entry_id.encode()
    assert await redis.get(Keys.rate_limit("acme")) == b"1"  # one event, one charge


async def test_another_tenant_conflicts_even_mid_write(redis):
    """The owner is claimed at admission: another tenant's copy is a conflict at once."""
    store = RedisClusterInsightStore(redis, announce=Announcements())
    first, other = await pending_entries(redis, 2)
    assert await store.admit(event_id="evt-1", tenant_id="acme", budget=5, entry=first) is (
        Admission.ADMITTED
    )
    assert await store.admit(event_id="evt-1", tenant_id="globex", budget=5, entry=other) is (
        Admission.CONFLICT
    )


async def test_a_dead_letter_is_written_once_when_its_ack_was_lost(redis):
    """LPUSH done, XACK lost to a crash: the redelivery's dead letter is not a second one."""
    store = RedisClusterInsightStore(redis, announce=Announcements())
    (entry,) = await pending_entries(redis, 1)
    assert await store.dead_letter(entry, '{"reason": "invalid"}') == (1, 0)
    assert await store.dead_letter(entry, '{"reason": "invalid"}') == (1, 0)
    assert await redis.llen(Keys.DLQ) == 1
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_the_worker_resumes_a_half_done_write_instead_of_calling_the_model(
    redis, fake_groq, make_settings
):
    """A worker died after W1; the next worker claims the entry and completes it unpaid."""
    (entry,) = await pending_entries(redis, 1)
    await redis.set(Keys.insight("evt-1"), record().model_dump_json(), ex=86_400)
    await redis.set(ClusterKeys.owner("evt-1"), "acme", ex=86_400)
    await redis.set(ClusterKeys.lease("evt-1"), entry.entry_id, ex=3600)
    worker = build_worker(make_settings(groq_base_url=fake_groq.base_url, claim_idle_seconds=0.2))
    async with running(worker.app):
        await settle(redis, worker, 1)
    assert fake_groq.stats.requests == 0
    assert consumed(worker, "duplicate") == 1
    assert await redis.zscore(Keys.TIMELINE, "evt-1") == 1_764_000_001.0
    assert await redis.lrange(Keys.by_agent("billing-agent"), 0, -1) == [b"evt-1"]
    assert len(await redis.xrange(Keys.INSIGHTS_STREAM)) == 1
    assert await redis.exists(ClusterKeys.lease("evt-1")) == 0


async def test_a_vanished_stream_is_recreated_and_the_worker_reads_on(
    redis, fake_groq, make_settings
):
    """The stream deleted under a running cluster worker: the group is recreated at 0
    (GroupHealingRedisCluster) and the next event is enriched."""
    worker = build_worker(make_settings(groq_base_url=fake_groq.base_url))
    async with running(worker.app):
        await xadd_event(redis, event(1))
        await settle(redis, worker, 1)
        await redis.delete(STREAM)  # NOGROUP on the next read
        await asyncio.sleep(0.3)
        await xadd_event(redis, event(2))
        await settle(redis, worker, 2)
    assert consumed(worker, "enriched") == 2
    assert await redis.exists(Keys.insight("evt-2")) == 1
    assert [g["name"] for g in await redis.xinfo_groups(STREAM)] == [GROUP.encode()]
