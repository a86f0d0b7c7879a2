"""How many times a Kafka record was delivered, counted in Redis.

Kafka has no delivery count: a record whose handling kills its worker is simply read again
from the last commit, forever. The worker counts each delivery of a record (group, topic,
partition, offset) in a Redis counter that expires after a week, so that a poison record
reaches ``MAX_DELIVERIES`` and the DLQ instead of looping; the count survives crashes and
moves with the partition to whichever member reads it next. A record with its outcome
has its counter deleted.

The counts asked for in one pass of the event loop go to Redis in one pipeline, and the
deletions are gathered for a fraction of a second into one ``DEL``: a round trip per
event for each would cost more than the rest of the event's Redis work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from app.adapters.redis_clients import RedisClient
from app.adapters.redis_store import unavailable_as_domain_error
from app.domain.keys import Keys

__all__ = ["ATTEMPTS_TTL_SECONDS", "RedisAttempts"]

ATTEMPTS_TTL_SECONDS = 7 * 86_400
_FORGET_EVERY_SECONDS = 0.2


class RedisAttempts:
    """Counts deliveries of Kafka records in Redis (``Keys.kafka_attempts``)."""

    def __init__(self, redis: RedisClient, *, group: str, topic: str) -> None:
        self._redis = redis
        self._group = group
        self._topic = topic
        self._counts: list[tuple[str, asyncio.Future[int]]] = []
        self._forgotten: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, partition: int, offset: int) -> str:
        return Keys.kafka_attempts(self._group, self._topic, partition, offset)

    async def count(self, partition: int, offset: int) -> int:
        """Count one more delivery of the record and return how many there were."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self._counts:
            self._spawn(self._count_all())
        self._counts.append((self._key(partition, offset), future))
        return await future

    async def forget(self, partition: int, offset: int) -> None:
        """The record has its outcome: its counter goes (with others, shortly)."""
        if not self._forgotten:
            self._spawn(self._forget_all())
        self._forgotten.append(self._key(partition, offset))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count_all(self) -> None:
        await asyncio.sleep(0)  # the counts asked for in this pass of the loop
        asked, self._counts = self._counts, []
        try:
            async with unavailable_as_domain_error("kafka_attempts"):
                pipe = self._redis.pipeline(transaction=False)
                for key, _ in asked:
                    pipe.incr(key)
                    pipe.expire(key, ATTEMPTS_TTL_SECONDS)
                replies = await pipe.execute()
        except Exception as exc:  # each asker retries its own record
            for _, future in asked:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), count in zip(asked, replies[::2], strict=True):
            if not future.done():
                future.set_result(int(count))

    async def _forget_all(self) -> None:
        await asyncio.sleep(_FORGET_EVERY_SECONDS)
        keys, self._forgotten = self._forgotten, []
        with contextlib.suppress(Exception):  # tidiness only: the counters expire anyway
            await self._redis.delete(*keys)
