"""Kafka faults with real processes: ``INBOUND=kafka faststream run app:app`` workers on a
real broker (Tansu), a private redis-server, a fake Groq process.

Each test breaks something from outside (kill -9, a second member joining mid-drain) and
checks from Redis, the fake's request log and the group's committed offsets that every
event ended in exactly one outcome, charged once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.domain.keys import Keys
from tests.faults.harness import (
    FakeGroqProcess,
    RedisClient,
    WorkerProcess,
    Workers,
    outcomes,
    wait_until,
)
from tests.support.kafka_broker import GROUP_TIMINGS, TansuServer

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

FAKE_LATENCY = 0.3  # seconds per model answer: events are in flight when things break


class KafkaWorkerProcess(WorkerProcess):
    """A worker on Kafka: started once it is a member of the group with partitions."""

    ready_line = "kafka_partitions_assigned"
    ready_what = "the worker to join the group"


class KafkaWorkers(Workers):
    def __init__(self, redis_url: str, fake: FakeGroqProcess, env: dict[str, Any]) -> None:
        self.redis_url = redis_url
        self.fake = fake
        self.defaults = env
        self.started: list[WorkerProcess] = []

    def start(self, worker_id: str, **settings: Any) -> WorkerProcess:
        worker = KafkaWorkerProcess(
            self.redis_url,
            self.fake.base_url,
            worker_id=worker_id,
            **{**self.defaults, **settings},
        )
        self.started.append(worker)
        return worker.start()


@pytest.fixture
def topic_of(kafka_server: TansuServer):
    def make(partitions: int) -> str:
        name = f"faults-{uuid.uuid4().hex[:8]}"
        asyncio.run(kafka_server.create_topic(name, partitions))
        return name

    return make


@pytest.fixture
def kafka_workers(redis_target, fake, kafka_server):
    def make(topic: str, group: str) -> KafkaWorkers:
        env = {
            "inbound": "kafka",
            "kafka_bootstrap_servers": kafka_server.bootstrap,
            "kafka_topic": topic,
            "insight_group": group,
            "kafka_session_timeout_ms": GROUP_TIMINGS["session_timeout_ms"],
            "kafka_heartbeat_interval_ms": GROUP_TIMINGS["heartbeat_interval_ms"],
            "event_order": "fifo",
        }
        made = KafkaWorkers(redis_target.url, fake, env)
        created.append(made)
        return made

    created: list[KafkaWorkers] = []
    yield make
    for workers in created:
        workers.close()


def produce(kafka_server: TansuServer, topic: str, count: int, partitions: int) -> list[str]:
    """``count`` events, one produce request each, spread over ``partitions`` in turn (the
    key, the tenant, would put them all on one); their ids."""
    tenant = "acme"

    async def run() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap)
        await producer.start()
        ids = []
        try:
            for n in range(count):
                event_id = f"kf-{n}"
                body = {
                    "event_id": event_id,
                    "tenant_id": tenant,
                    "agent_id": "agent-a",
                    "agent_name": event_id,  # the fake Groq logs it: one name per event
                    "tool_name": "shell.exec",
                    "decision": "deny",
                    "severity": "low",
                    "timestamp": 1_795_573_200 + n,
                }
                await producer.send_and_wait(
                    topic, json.dumps(body).encode(), key=tenant.encode(), partition=n % partitions
                )
                ids.append(event_id)
        finally:
            await producer.stop()
        return ids

    return asyncio.run(run())


def committed_total(kafka_server: TansuServer, group: str, topic: str, partitions: int) -> int:
    async def run() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
        await admin.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            answer = await admin.list_consumer_group_offsets(group, partitions=tps)
            return sum(max(meta.offset, 0) for meta in answer.values())
        finally:
            await admin.close()

    return asyncio.run(run())


def all_written(client: RedisClient, ids: list[str]) -> dict[str, Any] | None:
    state = outcomes(client, ids)
    return state if len(state["insights"]) == len(ids) else None


def assert_charged_once(client: RedisClient, ids: list[str]) -> None:
    assert client.get(Keys.rate_limit("acme")) == str(len(ids)).encode()
    assert client.scard(Keys.charged("acme")) == len(ids)


def test_kill_9_mid_drain_then_another_member_takes_over(
    client, fake, kafka_server, topic_of, kafka_workers
):
    """A member killed with records in flight: another member takes its partitions at the
    last commit and finishes; nothing lost, one budget charge per event, offsets at the end."""
    topic, group = topic_of(3), f"g-{uuid.uuid4().hex[:8]}"
    ids = produce(kafka_server, topic, 60, partitions=3)
    workers = kafka_workers(topic, group)
    first = workers.start("k-1", worker_concurrency=8)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 10, within=30, what="progress")
    first.kill()
    assert len(outcomes(client, ids)["insights"]) < 60, "the kill leaves events to do"
    second = workers.start("k-2", worker_concurrency=8)
    state = wait_until(lambda: all_written(client, ids), within=60, what="all 60 insights")
    assert state["dead"] == []
    assert_charged_once(client, ids)
    wait_until(
        lambda: committed_total(kafka_server, group, topic, 3) == 60,
        within=20,
        what="every partition committed to its end",
    )
    assert second.terminate(within=30) == 0


def test_a_second_member_joining_mid_drain_shares_the_partitions_without_overlap(
    client, fake, kafka_server, topic_of, kafka_workers
):
    """A rebalance while records are in flight: the revoked partitions finish and commit
    before moving, so no event is sent to the model twice; both members do work; both stop
    with exit code 0 and everything committed."""
    topic, group = topic_of(4), f"g-{uuid.uuid4().hex[:8]}"
    ids = produce(kafka_server, topic, 80, partitions=4)
    workers = kafka_workers(topic, group)
    first = workers.start("k-1", worker_concurrency=4)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 8, within=30, what="progress")
    second = workers.start("k-2", worker_concurrency=4)
    state = wait_until(lambda: all_written(client, ids), within=90, what="all 80 insights")
    assert state["dead"] == []
    assert_charged_once(client, ids)
    asked = Counter(fake.agents_requested())
    assert {name for name, times in asked.items() if times > 1} == set()
    assert set(asked) == set(ids)
    wait_until(
        lambda: committed_total(kafka_server, group, topic, 4) == 80,
        within=20,
        what="every partition committed to its end",
    )
    assert "kafka_partitions_revoked" in first.log()
    assert '"event": "event_processed"' in second.log()
    assert second.terminate(within=30) == 0
    assert first.terminate(within=30) == 0


def test_a_record_that_kills_its_workers_reaches_the_dlq_at_max_deliveries(
    client, fake, kafka_server, topic_of, kafka_workers
):
    """Kafka counts no deliveries: the worker does, in Redis. A record whose handling kills
    the worker each time (kill -9 while its model call hangs) is dead-lettered with reason
    ``max_deliveries`` by the member that reads it once more, not handled a third time."""
    topic, group = topic_of(1), f"g-{uuid.uuid4().hex[:8]}"
    fake.script(script=[{"hold": True}, {"hold": True}])  # the two deliveries that "crash"
    ids = produce(kafka_server, topic, 1, partitions=1)
    workers = kafka_workers(topic, group)
    for attempt in (1, 2):
        worker = workers.start(f"k-{attempt}", max_deliveries=2)
        wait_until(
            lambda n=attempt: len(fake.agents_requested()) >= n,
            within=30,
            what=f"delivery {attempt} to reach the model",
        )
        worker.kill()
    last = workers.start("k-3", max_deliveries=2)
    state = wait_until(lambda: outcomes(client, ids)["letters"], within=30, what="a dead letter")
    letter = state[0]
    assert letter["reason"] == "max_deliveries"
    assert letter["stream"] == f"kafka:{topic}"
    assert letter["entry_id"] == "0-0"
    assert len(fake.agents_requested()) == 2  # the third delivery never called the model
    assert outcomes(client, ids)["insights"] == set()
    wait_until(
        lambda: committed_total(kafka_server, group, topic, 1) == 1,
        within=20,
        what="the poison record committed past",
    )
    assert client.keys("acp:groq:kafka:attempts:*") == []
    assert last.terminate(within=30) == 0
