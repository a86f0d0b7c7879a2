"""Stream retention on a real Redis: only what every group acknowledged goes, the newest stay.

The worker tests drain 20,000 events with the offline provider (no model latency) and a
trim pass every 0.2 s; each takes 30-45 s on a loaded 2-core machine (the worker drains
about 500 events/s there). Trimming is approximate (``MINID ~``): Redis frees only whole
nodes of the stream, so a trim keeps the exact cut plus at most the rest of the node the
cut falls in: the bound asserted is ``exact <= XLEN < exact + stream-node-max-entries``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from app.adapters.retention import StreamRetention
from app.bootstrap import build_worker
from app.operations.http import GroupSampler
from app.runtime.metrics import Metrics
from tests.conftest import running
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"
ARCHIVER = "archiver"
EVENTS = 20_000
KEEP = 1000


async def add_events(redis: Redis, count: int) -> list[str]:
    """XADD ``count`` valid events as the gateway does; their entry ids, oldest first."""
    ids: list[str] = []
    for start in range(0, count, 2000):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, min(count, start + 2000)):
            body = {
                "event_id": f"evt-{n}",
                "tenant_id": f"t{n % 7}",
                "agent_id": "agent-a",
                "severity": "low",
                "decision": "deny",
                "timestamp": 1_795_573_200 + n,
            }
            pipe.xadd(STREAM, {"payload": json.dumps(body)})
        ids += [entry_id.decode() for entry_id in await pipe.execute()]
    return ids


async def read_and_ack(redis: Redis, group: str, count: int, *, keep_pending=()) -> list[str]:
    """Read ``count`` entries as ``group`` and ack them, except those in ``keep_pending``."""
    read: list[str] = []
    while len(read) < count:
        reply: Any = await redis.xreadgroup(
            group, "reader", {STREAM: ">"}, count=min(1000, count - len(read))
        )
        batch = [entry_id.decode() for entry_id, _ in reply[0][1]]
        read += batch
        acks = [entry_id for entry_id in batch if entry_id not in keep_pending]
        if acks:
            await redis.xack(STREAM, group, *acks)
    return read


async def node_size(redis: Redis) -> int:
    config = await redis.config_get("stream-node-max-entries")
    return int(str(config["stream-node-max-entries"]))


async def drained(redis: Redis, within: float = 60.0, events: int = EVENTS) -> None:
    """Wait until the worker's group has every entry delivered and acknowledged."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(STREAM)}
        mine = groups.get(GROUP)
        if mine and mine["entries-read"] == events and mine["pending"] == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker did not drain {events} events in {within}s")


async def settled_length(redis: Redis, at_most: int, within: float = 15.0) -> int:
    """XLEN once it is at most ``at_most`` (trim passes run in the background)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        length = int(await redis.xlen(STREAM))
        if length <= at_most:
            return length
        await asyncio.sleep(0.1)
    raise AssertionError(f"XLEN stayed at {await redis.xlen(STREAM)} > {at_most}")


def worker_settings(make_settings: Any, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "llm_provider": "offline",
        "stream_keep_entries": KEEP,
        "stream_trim_interval_seconds": 0.2,
        "insight_budget_per_hour_per_tenant": 100_000,
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.mark.cluster_smoke
async def test_a_drained_stream_is_trimmed_to_the_newest_keep_entries(redis, make_settings):
    """20,000 events acked by the only group: XLEN ends at STREAM_KEEP_ENTRIES (+ one node)."""
    ids = await add_events(redis, EVENTS)
    bound = KEEP + await node_size(redis) - 1
    worker = build_worker(worker_settings(make_settings))
    async with running(worker.app):
        await drained(redis)
        length = await settled_length(redis, bound)
        await asyncio.sleep(0.6)  # a few more passes change nothing: the newest stay
        assert await redis.xlen(STREAM) == length
    assert KEEP <= length <= bound
    remaining = [entry_id.decode() for entry_id, _ in await redis.xrange(STREAM)]
    assert remaining == ids[-length:]  # the newest, in order, none missing
    assert worker.metrics.stream_trimmed._value.get() == EVENTS - length
    # MINID trims leave Redis able to compute the group's lag (XDEL would not)
    info = (await redis.xinfo_groups(STREAM))[0]
    assert info["lag"] == 0


async def test_a_group_that_reads_nothing_keeps_every_entry(redis, make_settings):
    """A second group created at 0 that never reads: the drained stream keeps all 20,000."""
    await add_events(redis, EVENTS)
    await redis.xgroup_create(STREAM, ARCHIVER, id="0")
    worker = build_worker(worker_settings(make_settings))
    async with running(worker.app):
        await drained(redis)
        await asyncio.sleep(1.0)  # five trim intervals after the drain
        assert await StreamRetention(redis, worker.settings, Metrics()).trim() == 0
    assert await redis.xlen(STREAM) == EVENTS
    assert worker.metrics.stream_trimmed._value.get() == 0


async def test_a_group_half_way_loses_nothing_it_has_not_acknowledged(redis, make_settings):
    """Archiver read 10,000 and acked all but 500: those 500 and the 10,000 unread all stay."""
    ids = await add_events(redis, EVENTS)
    await redis.xgroup_create(STREAM, ARCHIVER, id="0")
    held = set(ids[6000:6500])
    read = await read_and_ack(redis, ARCHIVER, 10_000, keep_pending=held)
    assert read == ids[:10_000]
    bound = len(ids) - 6000 + await node_size(redis) - 1
    worker = build_worker(worker_settings(make_settings))
    async with running(worker.app):
        await drained(redis)
        length = await settled_length(redis, bound)
        await asyncio.sleep(0.6)
        assert await redis.xlen(STREAM) == length
    remaining = [entry_id.decode() for entry_id, _ in await redis.xrange(STREAM)]
    # everything from the archiver's oldest pending entry on is still there, in order
    assert remaining[-(len(ids) - 6000) :] == ids[6000:]
    assert len(ids) - 6000 <= length <= bound
    # and the archiver can still read the rest: 10,000 entries, none missing
    rest = await read_and_ack(redis, ARCHIVER, 10_000)
    assert rest == ids[10_000:]


async def test_retention_off_trims_nothing(redis, make_settings):
    """STREAM_RETENTION=off: a drained stream keeps every entry (3x KEEP is enough to show)."""
    await add_events(redis, 3 * KEEP)
    worker = build_worker(worker_settings(make_settings, stream_retention="off"))
    async with running(worker.app):
        await drained(redis, events=3 * KEEP)
        await asyncio.sleep(1.0)
    assert await redis.xlen(STREAM) == 3 * KEEP
    assert worker.metrics.stream_trimmed._value.get() == 0


async def fill_acked(redis: Redis, *, archiver_acks: int) -> list[str]:
    """20,000 entries: all acked by the worker's group, ``archiver_acks`` by an archiver."""
    ids = await add_events(redis, EVENTS)
    await redis.xgroup_create(STREAM, GROUP, id="0")
    await redis.xgroup_create(STREAM, ARCHIVER, id="0")
    await read_and_ack(redis, GROUP, EVENTS)
    await read_and_ack(redis, ARCHIVER, archiver_acks)
    return ids


def trimmer(redis: Redis, make_settings: Any, **kwargs: Any) -> StreamRetention:
    settings = make_settings(stream_keep_entries=KEEP)
    return StreamRetention(redis, settings, Metrics(), **kwargs)


async def test_concurrent_trimmers_never_trim_into_the_kept_entries(redis, make_settings):
    """Eight trimmers at once, no lock, exact trims: XLEN ends at exactly KEEP, not below."""
    ids = await fill_acked(redis, archiver_acks=EVENTS)
    trimmers = [trimmer(redis, make_settings, batch=700, approximate=False) for _ in range(8)]
    removed = await asyncio.gather(*(t.trim() for t in trimmers))
    assert sum(removed) == EVENTS - KEEP
    assert [e.decode() for e, _ in await redis.xrange(STREAM)] == ids[-KEEP:]


async def test_concurrent_trimmers_never_trim_what_a_group_has_not_read(redis, make_settings):
    """Eight trimmers at once against an archiver at 12,000: its 8,000 unread entries stay."""
    ids = await fill_acked(redis, archiver_acks=12_000)
    trimmers = [trimmer(redis, make_settings, batch=700, approximate=False) for _ in range(8)]
    await asyncio.gather(*(t.trim() for t in trimmers))
    assert [e.decode() for e, _ in await redis.xrange(STREAM)] == ids[12_000:]


async def test_a_plan_made_before_another_trim_cannot_cut_into_the_kept_entries(
    redis, make_settings
):
    """Two plans from the same XLEN, applied one after the other: the second removes nothing."""
    ids = await fill_acked(redis, archiver_acks=EVENTS)
    first = trimmer(redis, make_settings, batch=EVENTS, approximate=False)
    second = trimmer(redis, make_settings, batch=EVENTS, approximate=False)
    plan_a, plan_b = await first.snapshot(), await second.snapshot()
    assert plan_a is not None
    assert plan_b is not None
    assert (await first.apply(plan_a)).removed == EVENTS - KEEP
    result = await second.apply(plan_b)
    assert (result.removed, result.outcome) == (0, "keep")
    assert [e.decode() for e, _ in await redis.xrange(STREAM)] == ids[-KEEP:]


@pytest.mark.parametrize("change", ["group-added", "group-moved-back"])
async def test_a_group_created_or_moved_back_after_planning_voids_the_plan(
    redis, make_settings, change
):
    """A group that appears (at 0) or is moved back between plan and trim: nothing goes."""
    await fill_acked(redis, archiver_acks=EVENTS)
    retention = trimmer(redis, make_settings, batch=EVENTS)
    snapshot = await retention.snapshot()
    assert snapshot is not None
    if change == "group-added":
        await redis.xgroup_create(STREAM, "late-reader", id="0")
    else:
        await redis.xgroup_setid(STREAM, ARCHIVER, id="0")
    result = await retention.apply(snapshot)
    assert (result.removed, result.outcome) == (0, change)
    assert await redis.xlen(STREAM) == EVENTS


async def test_one_worker_at_a_time_takes_the_pass_and_releases_the_lock(redis, make_settings):
    """While another worker holds the lock a pass is skipped; after a pass the lock is gone."""
    await fill_acked(redis, archiver_acks=EVENTS)
    retention = trimmer(redis, make_settings)
    lock = "acp:groq:retention:" + STREAM
    await redis.set(lock, "another-worker", px=5000)
    assert await retention.run_pass() is None
    assert await redis.xlen(STREAM) == EVENTS
    assert await redis.get(lock) == b"another-worker"  # not released by who does not own it
    await redis.delete(lock)
    trimmed = await retention.run_pass()
    assert trimmed is not None
    assert trimmed > 0
    assert await redis.exists(lock) == 0
    assert KEEP <= await redis.xlen(STREAM) < KEEP + await node_size(redis)


async def test_the_loop_survives_a_redis_outage_and_stops_promptly(make_settings):
    """No Redis: each failed pass is counted, the loop keeps going, and stop() ends it at once."""
    settings = make_settings(stream_trim_interval_seconds=0.1)
    nobody = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    metrics = Metrics()
    retention = StreamRetention(nobody, settings, metrics)
    task = asyncio.create_task(retention.run())
    errors = metrics.redis_errors.labels(operation="retention")
    deadline = time.monotonic() + 10
    while errors._value.get() < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert errors._value.get() >= 3
    assert not task.done()
    retention.stop()
    await asyncio.wait_for(task, timeout=1.0)
    await nobody.aclose()


async def test_the_stream_length_gauge_is_sampled_from_xlen(redis):
    """acp_groq_stream_length is the stream's XLEN at the last sample."""
    await add_events(redis, 123)
    metrics = Metrics()
    await GroupSampler(redis, metrics, STREAM, GROUP).sample()
    assert metrics.stream_length._value.get() == 123
