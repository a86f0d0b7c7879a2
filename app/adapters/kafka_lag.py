"""The consumer group's lag on Kafka, read from outside the group (``groq-worker status``).

Per partition of the topic: the group's committed offset (the next record it will read)
and the log's end offset; the lag is their difference (the whole partition when nothing is
committed). Read with an admin client and a consumer that joins no group, so asking never
disturbs the workers' group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["KafkaGroupLag", "PartitionLag", "kafka_group_lag"]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group committed nothing here yet
    end: int
    lag: int


@dataclass(frozen=True, slots=True)
class KafkaGroupLag:
    topic: str
    group: str
    partitions: list[PartitionLag]
    problem: str | None = None  # why it could not be read (the topic missing, no broker)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "group": self.group,
            "lag": self.total,
            "partitions": [asdict(p) for p in self.partitions],
            "problem": self.problem,
        }


async def kafka_group_lag(
    servers: list[str], topic: str, group: str, **client_options: Any
) -> KafkaGroupLag:
    """The group's lag on each partition of ``topic`` (``client_options``: security)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, **client_options
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **client_options)
    await consumer.start()
    try:
        await admin.start()
        try:
            # From the metadata of every topic the consumer fetched at start: asking for
            # the topic by name would create it where brokers auto-create topics.
            numbers = consumer.partitions_for_topic(topic)
            if not numbers:
                return KafkaGroupLag(topic, group, [], problem=f"topic {topic} does not exist")
            tps = [TopicPartition(topic, n) for n in sorted(numbers)]
            ends = await consumer.end_offsets(tps)
            # Tansu cannot answer this without the partitions named (docs/kafka-notes.md).
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        finally:
            await admin.close()
    finally:
        await consumer.stop()
    partitions = []
    for tp in tps:
        meta = offsets.get(tp)
        committed = meta.offset if meta is not None and meta.offset >= 0 else None
        end = int(ends[tp])
        partitions.append(
            PartitionLag(tp.partition, committed, end, max(0, end - (committed or 0)))
        )
    return KafkaGroupLag(topic, group, partitions)
