"""The batch lane's Redis state: waiting requests, the lane's batches, the lane lock.

Keys (``app.domain.keys``): ``acp:groq:batch:requests`` (HASH event id -> prepared request),
``acp:groq:batch:waiting`` (ZSET of the requests not yet in a batch, by when they were
recorded), ``acp:groq:batch:batches`` (HASH lane batch id -> record) and
``acp:groq:batch:lock`` (the one worker that submits and polls).

What makes the lane lose nothing and do nothing twice:

* ``record`` keeps the request, points the event's lease at the lane (a copy of the event
  arriving meanwhile is a duplicate), makes the event id's owner last as long (no other
  tenant can take the id while it waits) and XACKs the stream entry in one script: there
  is no moment when the entry is acknowledged without its request kept, or the reverse.
* A request leaves ``requests`` only in the transaction that writes its insight (the
  insight's MULTI/EXEC) or its dead letter: a worker killed at any point leaves every
  unanswered request in place, and one already answered is never answered again.
* Requests move from waiting to a batch, and batches are updated or forgotten, only by the
  lock's holder (each script checks the token), so two workers never submit the same
  request. The lock expires if its holder dies; any worker then takes it over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.adapters.redis_replies import as_text
from app.adapters.redis_store import push_letter, pushed, unavailable_as_domain_error
from app.domain.batch import BatchRecord
from app.domain.keys import DLQ_MAX_ENTRIES, Keys
from app.domain.ports import DeadLettered, EntryRef

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient

__all__ = ["LANE_HOLD_SECONDS", "LaneSummary", "RedisLaneStore"]

# How long an event's lease points at the lane: longer than any batch can take (Groq's
# completion window is 24 h to 7 d). The request itself has no TTL: it stays until its
# insight or dead letter is written.
LANE_HOLD_SECONDS = 8 * 86_400

_RECORD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.pcall('XACK', KEYS[4], ARGV[5], ARGV[4])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SET', KEYS[3], 'lane', 'EX', ARGV[6])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.pcall('XACK', KEYS[4], ARGV[5], ARGV[4])
return 1
"""

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

_UPDATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then return redis.call('HDEL', KEYS[2], ARGV[2]) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class LaneSummary:
    """What the lane holds now (``groq-worker status``, ``groq-worker batch list``)."""

    waiting: int
    oldest_recorded_at: float | None
    batches: list[BatchRecord]
    holder: str | None

    def as_json(self, now: float) -> dict[str, Any]:
        oldest = self.oldest_recorded_at
        return {
            "waiting": self.waiting,
            "oldest_waiting_seconds": None if oldest is None else round(now - oldest, 3),
            "lock_holder": self.holder,
            "batches": [
                {
                    "lane_id": b.local_id,
                    "batch_id": b.groq_id,
                    "state": b.state.value,
                    "requests": len(b.event_ids),
                    "age_seconds": round(now - b.created_at, 3),
                }
                for b in self.batches
            ],
        }


class RedisLaneStore:
    """``LaneStore`` on Redis (redis-py's asyncio client)."""

    def __init__(self, redis: RedisClient, *, dlq_max_entries: int = DLQ_MAX_ENTRIES) -> None:
        self._redis = redis
        self._dlq_max = dlq_max_entries

    async def _script(self, operation: str, script: str, keys: list[str], args: list[Any]) -> Any:
        async with unavailable_as_domain_error(operation):
            return await self._redis.eval(script, len(keys), *keys, *args)

    async def record(self, entry: EntryRef, *, event_id: str, request_json: str, at: float) -> bool:
        keys = [
            Keys.LANE_REQUESTS,
            Keys.LANE_WAITING,
            Keys.lease(event_id),
            entry.stream,
            Keys.owner(event_id),
        ]
        args = [event_id, request_json, at, entry.entry_id, entry.group, LANE_HOLD_SECONDS]
        return bool(await self._script("lane_record", _RECORD, keys, args))

    async def waiting(self, limit: int) -> list[str]:
        async with unavailable_as_domain_error("lane_read"):
            ids: list[Any] = await self._redis.zrange(Keys.LANE_WAITING, 0, max(limit, 1) - 1)
            if not ids:
                return []
            found = await self._redis.hmget(Keys.LANE_REQUESTS, ids)
        return [as_text(value) for value in found if value is not None]

    async def waiting_stats(self) -> tuple[int, float | None]:
        async with (
            unavailable_as_domain_error("lane_read"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            pipe.zcard(Keys.LANE_WAITING)
            pipe.zrange(Keys.LANE_WAITING, 0, 0, withscores=True)
            count, oldest = await pipe.execute()
        return int(count), (float(oldest[0][1]) if oldest else None)

    async def requests(self, event_ids: Sequence[str]) -> list[str | None]:
        if not event_ids:
            return []
        async with unavailable_as_domain_error("lane_read"):
            found = await self._redis.hmget(Keys.LANE_REQUESTS, list(event_ids))
        return [None if value is None else as_text(value) for value in found]

    async def batches(self) -> list[str]:
        async with unavailable_as_domain_error("lane_read"):
            found = await self._redis.hvals(Keys.LANE_BATCHES)
        return [as_text(value) for value in found]

    async def lock(self, token: str, ttl_seconds: float) -> bool:
        args = [token, max(1, int(ttl_seconds * 1000))]
        return bool(await self._script("lane_lock", _RENEW, [Keys.LANE_LOCK], args))

    async def unlock(self, token: str) -> None:
        await self._script("lane_lock", _UNLOCK, [Keys.LANE_LOCK], [token])

    async def claim(
        self, token: str, local_id: str, record_json: str, event_ids: Sequence[str]
    ) -> bool:
        keys = [Keys.LANE_LOCK, Keys.LANE_WAITING, Keys.LANE_BATCHES]
        args = [token, local_id, record_json, *event_ids]
        return bool(await self._script("lane_claim", _CLAIM, keys, args))

    async def update(self, token: str, local_id: str, record_json: str) -> bool:
        keys = [Keys.LANE_LOCK, Keys.LANE_BATCHES]
        return bool(
            await self._script("lane_update", _UPDATE, keys, [token, local_id, record_json])
        )

    async def finish(self, token: str, local_id: str) -> bool:
        return await self.update(token, local_id, "")

    async def has_work(self) -> bool:
        """Whether requests or batches are in the lane (left by a worker with the lane on)."""
        async with unavailable_as_domain_error("lane_read"):
            return bool(await self._redis.exists(Keys.LANE_REQUESTS, Keys.LANE_BATCHES))

    async def summary(self) -> LaneSummary:
        count, oldest = await self.waiting_stats()
        batches = [BatchRecord.model_validate_json(raw) for raw in await self.batches()]
        async with unavailable_as_domain_error("lane_read"):
            holder = await self._redis.get(Keys.LANE_LOCK)
        return LaneSummary(
            waiting=count,
            oldest_recorded_at=oldest,
            batches=sorted(batches, key=lambda b: b.created_at),
            holder=None if holder is None else as_text(holder),
        )

    def release_in(self, pipe: Any, event_id: str) -> None:
        pipe.hdel(Keys.LANE_REQUESTS, event_id)
        pipe.zrem(Keys.LANE_WAITING, event_id)

    async def dead_letter(
        self, entry: EntryRef, letter_json: str, *, event_id: str
    ) -> DeadLettered:
        async with (
            unavailable_as_domain_error("lane_dead_letter"),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            push_letter(pipe, letter_json, self._dlq_max)
            self.release_in(pipe, event_id)
            pipe.delete(Keys.lease(event_id))
            length, *_ = await pipe.execute()
        return pushed(length, self._dlq_max)
