"""`app.client.publish_event` against a real Redis and a running worker, with the document's
examples: what a Python gateway writes is what the worker enriches."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.bootstrap import build_worker
from app.client import InvalidEvent, publish_event
from app.domain.events import AuditEvent
from app.domain.insights import DeadLetter, InsightCreated, InsightRecord
from app.domain.keys import Keys
from app.runtime.metrics import Metrics
from tests.conftest import running

pytestmark = pytest.mark.integration

STREAM = "acp:groq_queue"
DOCUMENT = Path(__file__).resolve().parents[2] / "asyncapi" / "asyncapi.json"
OUTCOMES = ("enriched", "duplicate", "rate_limited", "dead_lettered")


def schema_examples(title: str) -> list[dict[str, Any]]:
    """The examples of a payload schema of the committed AsyncAPI document."""
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    examples: list[dict[str, Any]] = document["components"]["schemas"][title]["examples"]
    return examples


def valid_event(**overrides: Any) -> dict[str, Any]:
    return {**schema_examples("AuditEvent")[0], **overrides}


def outcome_count(metrics: Metrics) -> dict[str, float]:
    return {r: metrics.events_consumed.labels(result=r)._value.get() for r in OUTCOMES}


async def wait_for_outcomes(metrics: Metrics, expected: dict[str, int], within: float = 15.0):
    """Wait, bounded, until the worker counted exactly the ``expected`` outcomes."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        counts = outcome_count(metrics)
        if all(counts[r] >= n for r, n in expected.items()):
            break
        await asyncio.sleep(0.02)
    counts = outcome_count(metrics)
    assert {r: int(n) for r, n in counts.items() if n} == expected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_publish_event_writes_one_payload_field_with_the_event_json(redis):
    """The entry is the gateway's wire format: a single `payload` field holding the event."""
    event = valid_event()
    entry_id = await publish_event(redis, event)
    entries = await redis.xrange(STREAM)
    assert [eid.decode() for eid, _ in entries] == [entry_id]
    fields = entries[0][1]
    assert list(fields) == [b"payload"]
    assert json.loads(fields[b"payload"]) == event  # extra fields such as raw_input kept


async def test_publish_event_takes_a_validated_model_or_python_dates(redis):
    """An AuditEvent is written as its set fields; a datetime in a mapping as RFC 3339."""
    model = AuditEvent.model_validate(valid_event())
    await publish_event(redis, model)
    when = datetime(2026, 11, 25, 2, 20, tzinfo=UTC)
    await publish_event(redis, valid_event(event_id="evt-dated", timestamp=when))
    (_, first), (_, second) = await redis.xrange(STREAM)
    assert AuditEvent.model_validate_json(first[b"payload"]) == model
    assert json.loads(first[b"payload"]) == valid_event()
    assert json.loads(second[b"payload"])["timestamp"] == "2026-11-25T02:20:00Z"


async def test_publish_event_refuses_an_invalid_event_before_touching_redis(redis):
    """A bad event raises InvalidEvent naming the fields; nothing is written, no connection."""
    bad = valid_event(severity="apocalyptic", agent_id="no spaces allowed")
    del bad["timestamp"]
    unreachable = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(InvalidEvent) as refused:
            await publish_event(unreachable, bad)
    finally:
        await unreachable.aclose()
    message = str(refused.value)
    for field in ("severity", "agent_id", "timestamp"):
        assert field in message
    assert "apocalyptic" not in message
    assert "no spaces allowed" not in message
    assert refused.value.event_id == bad["event_id"]

    with pytest.raises(InvalidEvent, match="MAX_EVENT_BYTES"):
        await publish_event(redis, valid_event(raw_input="x" * 300_000))
    assert await redis.exists(STREAM) == 0


async def test_published_examples_become_insights_and_resending_is_a_duplicate(
    redis, make_settings
):
    """Every AuditEvent example of the document is enriched; sending one again changes nothing."""
    examples = schema_examples("AuditEvent")
    worker = build_worker(make_settings(llm_provider="offline"), configure_logs=False)
    async with running(worker.app):
        for example in examples:
            await publish_event(redis, example)
        await wait_for_outcomes(worker.metrics, {"enriched": len(examples)})
        first = await redis.get(Keys.insight(examples[0]["event_id"]))
        await publish_event(redis, examples[0])
        await wait_for_outcomes(worker.metrics, {"enriched": len(examples), "duplicate": 1})

    assert await redis.get(Keys.insight(examples[0]["event_id"])) == first
    for example in examples:
        record = InsightRecord.model_validate_json(
            await redis.get(Keys.insight(example["event_id"]))
        )
        assert (record.event_id, record.tenant_id) == (example["event_id"], example["tenant_id"])

    published = await redis.xrange(Keys.INSIGHTS_STREAM)
    assert len(published) == len(examples)
    documented_fields = set(schema_examples("InsightCreated")[0])
    for _, fields in published:
        body = fields[b"payload"]
        created = InsightCreated.model_validate_json(body)
        assert set(json.loads(body)) == documented_fields
        assert created.insight_key == Keys.insight(created.event_id)
    assert await redis.xpending(STREAM, "acp_insights_consumer_group") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_the_documented_invalid_entry_is_dead_lettered_as_documented(redis, make_settings):
    """The `invalid` DeadLetter example's entry, written raw, yields that dead letter."""
    documented = next(e for e in schema_examples("DeadLetter") if e["reason"] == "invalid")
    entry_id = await redis.xadd(
        STREAM, {**documented["fields"], documented["payload_field"]: documented["payload"]}
    )
    worker = build_worker(make_settings(llm_provider="offline"), configure_logs=False)
    async with running(worker.app):
        await wait_for_outcomes(worker.metrics, {"dead_lettered": 1})

    letters = await redis.lrange(Keys.DLQ, 0, -1)
    assert len(letters) == 1
    written = json.loads(letters[0])
    assert set(written) == set(documented)
    letter = DeadLetter.model_validate(written)
    assert letter.entry_id == entry_id.decode()
    assert (letter.reason.value, letter.error) == ("invalid", documented["error"])
    assert (letter.fields, letter.payload) == (documented["fields"], documented["payload"])
    assert (letter.event_id, letter.tenant_id) == (documented["event_id"], documented["tenant_id"])
