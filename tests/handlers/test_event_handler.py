"""Handler wiring with FastStream's TestRedisBroker: in-memory broker, fake ports."""

from __future__ import annotations

import json

import pytest
from faststream.redis import TestRedisBroker

from app.bootstrap import build_worker
from app.domain.errors import PermanentLLMError
from tests.handlers.wiring import announced, event
from tests.support.fakes import MemoryStore, ScriptedLLM

STREAM = "acp:groq_queue"


@pytest.fixture
def wired(make_settings):
    store, llm = MemoryStore(), ScriptedLLM()
    worker = build_worker(
        make_settings(llm_provider="offline"), llm=llm, store=store, configure_logs=False
    )
    return worker, store, llm


async def test_a_valid_event_is_enriched_written_published_and_acked(wired):
    """The subscriber validates the event, the service writes it, InsightCreated is published."""
    worker, store, llm = wired
    async with worker.event_path(), TestRedisBroker(worker.broker) as broker:
        await broker.publish(event(), stream=STREAM)
    assert list(store.insights) == ["evt-1"]
    record = json.loads(store.insights["evt-1"])
    assert record["model"] == "openai/gpt-oss-20b"  # medium -> fast model
    assert len(llm.requests) == 1
    assert "do not send me" not in llm.requests[0].user
    assert [c.event_id for c in announced(store)] == ["evt-1"]
    assert len(store.acked) == 1
    assert worker.metrics.events_consumed.labels(result="enriched")._value.get() == 1


async def test_an_invalid_event_is_dead_lettered_without_a_model_call(wired):
    """A schema violation never reaches the handler body: it becomes a dead letter."""
    worker, store, llm = wired
    assert announced(store) == []
    async with worker.event_path(), TestRedisBroker(worker.broker) as broker:
        await broker.publish(event(severity="apocalyptic"), stream=STREAM)
    letters = store.letters()
    assert len(letters) == 1
    assert letters[0]["reason"] == "invalid"
    assert "severity" in letters[0]["error"]
    assert letters[0]["event_id"] == "evt-1"
    assert llm.requests == []
    assert store.insights == {}
    assert len(store.acked) == 1
    assert worker.metrics.events_consumed.labels(result="dead_lettered")._value.get() == 1


async def test_a_json_array_is_dead_lettered_as_not_an_object(wired):
    """A payload that is JSON but not an object is invalid, and says so."""
    worker, store, llm = wired
    async with worker.event_path(), TestRedisBroker(worker.broker) as broker:
        await broker.publish([1, 2, 3], stream=STREAM)
    assert llm.requests == []
    assert store.letters()[0]["reason"] == "invalid"
    assert "not an object" in store.letters()[0]["error"]


async def test_a_permanent_llm_error_is_dead_lettered_as_llm_permanent(wired):
    """A 400 from the model ends the event with reason llm_permanent after one attempt."""
    worker, store, llm = wired
    llm.script.append(PermanentLLMError("bad_request", "nope", status=400))
    async with worker.event_path(), TestRedisBroker(worker.broker) as broker:
        await broker.publish(event(), stream=STREAM)
    assert [letter["reason"] for letter in store.letters()] == ["llm_permanent"]
    assert len(llm.requests) == 1
    assert announced(store) == []


async def test_a_redelivered_event_is_a_duplicate(wired):
    """The same event twice: one model call, the second outcome is duplicate."""
    worker, store, llm = wired
    async with worker.event_path(), TestRedisBroker(worker.broker) as broker:
        await broker.publish(event(), stream=STREAM)
        await broker.publish(event(), stream=STREAM)
    assert len(llm.requests) == 1
    assert worker.metrics.events_consumed.labels(result="duplicate")._value.get() == 1
    assert len(store.acked) == 2
