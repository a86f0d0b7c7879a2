"""How many times a Kafka record was delivered, counted in Redis.

Kafka has no delivery count: a record whose handling kills its worker is simply read again
from the last commit, forever. The worker counts each delivery of a record (group, topic,
partition, offset) in a Redis counter that expires after a week, so that a poison record
reaches ``MAX_DELIVERIES`` and the DLQ instead of looping; the count survives crashes and
moves with the partition to whichever member reads it next.
"""

from __future__ import annotations

from app.adapters.redis_clients import RedisClient
from app.adapters.redis_store import unavailable_as_domain_error
from app.domain.keys import Keys

__all__ = ["ATTEMPTS_TTL_SECONDS", "RedisAttempts"]

ATTEMPTS_TTL_SECONDS = 7 * 86_400


class RedisAttempts:
    """Counts deliveries of Kafka records in Redis (``Keys.kafka_attempts``)."""

    def __init__(self, redis: RedisClient, *, group: str, topic: str) -> None:
        self._redis = redis
        self._group = group
        self._topic = topic

    async def count(self, partition: int, offset: int) -> int:
        """Count one more delivery of the record and return how many there were."""
        key = Keys.kafka_attempts(self._group, self._topic, partition, offset)
        async with unavailable_as_domain_error("kafka_attempts"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, ATTEMPTS_TTL_SECONDS)
            count, _ = await pipe.execute()
        return int(count)

    async def forget(self, partition: int, offset: int) -> None:
        """The record has its outcome: its count is no longer needed."""
        key = Keys.kafka_attempts(self._group, self._topic, partition, offset)
        async with unavailable_as_domain_error("kafka_attempts"):
            await self._redis.delete(key)
