"""`acp:groq:insights:stream` as any Redis client reads it: plain fields, `payload` JSON."""

from __future__ import annotations

import asyncio
import json

import pytest
from faststream.redis import RedisBroker

from app.bootstrap import build_worker
from app.domain.insight_stream import InsightCreatedEntry
from app.domain.keys import Keys
from tests.conftest import running
from tests.integration.test_client import schema_examples, valid_event, wait_for_outcomes

pytestmark = pytest.mark.integration

STREAM = "acp:groq_queue"


async def test_every_insight_created_entry_parses_as_json_with_the_documented_fields(
    redis, make_settings
):
    """A plain XRANGE reads each entry: one `payload` field whose JSON has exactly the
    documented InsightCreated fields, no FastStream framing (`__data__`) anywhere."""
    worker = build_worker(make_settings(llm_provider="offline"), configure_logs=False)
    ids = [f"evt-plain-{n}" for n in range(5)]
    async with running(worker.app):
        for event_id in ids:
            await redis.xadd(STREAM, {"payload": json.dumps(valid_event(event_id=event_id))})
        await wait_for_outcomes(worker.metrics, {"enriched": len(ids)})

    documented = set(schema_examples("InsightCreated")[0])
    entries = await redis.xrange(Keys.INSIGHTS_STREAM)
    assert len(entries) == len(ids)
    seen = []
    for _, fields in entries:
        assert set(fields) == {b"payload"}  # not tracing: no trace fields
        created = json.loads(fields[b"payload"].decode("utf-8"))
        assert set(created) == documented
        assert created["insight_key"] == Keys.insight(created["event_id"])
        seen.append(created["event_id"])
    assert sorted(seen) == sorted(ids)


async def test_a_faststream_subscriber_declared_from_the_document_receives_the_model(
    redis, redis_url, make_settings
):
    """A FastStream subscriber typed with the document's schema gets the InsightCreated
    model from each entry (FastStream hands an entry without `__data__` over as the JSON of
    its fields)."""
    received: asyncio.Queue[InsightCreatedEntry] = asyncio.Queue()
    reader = RedisBroker(redis_url)

    @reader.subscriber(stream=Keys.INSIGHTS_STREAM)
    async def follow(entry: InsightCreatedEntry) -> None:
        await received.put(entry)

    worker = build_worker(make_settings(llm_provider="offline"), configure_logs=False)
    async with reader, running(worker.app):
        await reader.start()
        await redis.xadd(STREAM, {"payload": json.dumps(valid_event(event_id="evt-fs-1"))})
        entry = await asyncio.wait_for(received.get(), timeout=15)
    assert entry.payload.event_id == "evt-fs-1"
    assert entry.payload.insight_key == Keys.insight("evt-fs-1")
    assert entry.traceparent is None
