"""Kafka handler wiring with FastStream's TestKafkaBroker: in-memory brokers, fake ports."""

from __future__ import annotations

import json

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.redis import TestRedisBroker

from app.bootstrap import build_worker
from tests.handlers.wiring import announced, event
from tests.support.fakes import MemoryStore, ScriptedLLM

TOPIC = "acp.groq.events"


@pytest.fixture
def wired(make_settings):
    store, llm = MemoryStore(), ScriptedLLM()
    settings = make_settings(llm_provider="offline", inbound="kafka", insight_group="g-wiring")
    worker = build_worker(settings, llm=llm, store=store, configure_logs=False)
    return worker, store, llm


async def test_a_record_is_enriched_by_the_same_service_and_published_on_redis(wired):
    """The Kafka subscriber validates the record's value as an event, the service writes
    the insight, InsightCreated goes to the Redis stream, and the record's end names
    ``kafka:<topic>`` / ``<partition>-<offset>``."""
    worker, store, llm = wired
    assert worker.kafka is not None
    assert worker.kafka_broker is not None
    assert worker.routes.subscriber is None  # no Redis stream is read
    async with (
        worker.event_path(),
        TestRedisBroker(worker.broker),
        TestKafkaBroker(worker.kafka_broker) as kafka,
    ):
        await kafka.publish(
            json.dumps(event(event_id="kafka-evt-1")).encode(), topic=TOPIC, key=b"acme"
        )
        assert await worker.kafka.inbound.drain(5.0) == 0
    assert list(store.insights) == ["kafka-evt-1"]
    assert "do not send me" not in llm.requests[0].user
    assert [c.event_id for c in announced(store)] == ["kafka-evt-1"]
    assert store.acked == ["0-0"]  # partition 0, offset 0
    assert worker.metrics.events_consumed.labels(result="enriched")._value.get() == 1


async def test_an_invalid_record_is_dead_lettered_with_its_key(wired):
    """A schema violation never reaches the service: a dead letter keeps the value and key."""
    worker, store, llm = wired
    assert worker.kafka is not None
    assert worker.kafka_broker is not None
    async with (
        worker.event_path(),
        TestRedisBroker(worker.broker),
        TestKafkaBroker(worker.kafka_broker) as kafka,
    ):
        await kafka.publish(
            json.dumps(event(severity="apocalyptic")).encode(), topic=TOPIC, key=b"acme"
        )
        await worker.kafka.inbound.drain(5.0)
    letters = store.letters()
    assert [letter["reason"] for letter in letters] == ["invalid"]
    assert letters[0]["stream"] == f"kafka:{TOPIC}"
    assert "severity" in letters[0]["error"]
    assert llm.requests == []
