"""The scheduler's Redis side: waiting events handed to free slots, in order, crash-safe.

Events are scheduled by the admission script (``app/adapters/redis_store.py``): their job
kept, their entry acknowledged, in one step. From there, each step below is one script
(all keys share one hash tag, ``Keys.SCHED``), so a crash between any two leaves every job
in exactly one place: waiting in its tenant's queue, running (handed to a slot, under a
lease), or waiting to be retried later. A job leaves the scheduler only in the transaction
that writes its outcome (its insight, or its dead letter: ``end_in``).

* ``pick``: the next waiting jobs, most urgent severity first, then by the tenants' tags
  (``app/domain/scheduling.py``); each moves to ``running`` under its consumer's name
  (``WORKER_ID``), a delivery counted. Picks ride in the event path's transactions (the
  store's group commit).
* ``refresh``: the jobs this process runs are marked alive (its heartbeat), as XCLAIM
  JUSTID keeps a stream entry fresh.
* ``reap``: jobs not marked alive for ``CLAIM_IDLE_SECONDS`` (their worker died) go back
  to the head of their tenant's queue, their order kept, as XAUTOCLAIM takes a dead
  consumer's entries; one handed out ``MAX_DELIVERIES`` times is returned as poison
  instead (dead-lettered by the caller, which ends it); jobs waiting to be retried later
  go back when their time comes, no delivery counted.
* ``reclaim_own``: at start, the jobs still running under this consumer's name (a
  restart under the same ``WORKER_ID``) go back at once, as its own pending entries do.
* ``later``: a running job waits to be retried (a busy provider), its slot freed; with no
  delay (a graceful stop), it goes straight back to the head of its queue.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.adapters.redis_batch import GroupCommit
from app.adapters.redis_store import unavailable_as_domain_error
from app.domain.keys import Keys
from app.domain.scheduling import SEVERITY_ORDER, Handed, Job, WaitingStats
from app.domain.text import as_text

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.adapters.redis_clients import RedisClient

__all__ = ["RedisScheduler", "waiting_stats"]

# The Lua loop over the severities, most urgent first (as SEVERITY_ORDER).
_SEVERITIES = "{" + ", ".join(f"'{severity.value}'" for severity in SEVERITY_ORDER) + "}"

# KEYS: jobs, running, deliveries, owners. ARGV: prefix, how many, now (ms), consumer.
# Returns {event id, job, deliveries} for each job handed out.
_PICK = (
    f"local severities = {_SEVERITIES}\n"
    """
local picked = {}
local wanted = tonumber(ARGV[2])
for _, severity in ipairs(severities) do
  local tenants = ARGV[1] .. 'tenants:' .. severity
  while #picked < wanted do
    local head = redis.call('ZRANGE', tenants, 0, 0, 'WITHSCORES')
    if #head == 0 then break end
    local tenant, tag = head[1], tonumber(head[2])
    local queue = ARGV[1] .. 'queue:' .. severity .. ':' .. tenant
    local item = redis.call('LPOP', queue)
    if not item then
      redis.call('ZREM', tenants, tenant)
    else
      local id = string.sub(item, string.find(item, ' ', 1, true) + 1)
      redis.call('HSET', ARGV[1] .. 'clock', severity, tag)
      local next_item = redis.call('LINDEX', queue, 0)
      if next_item then
        local cost = tonumber(string.sub(next_item, 1, string.find(next_item, ' ', 1, true) - 1))
        redis.call('ZADD', tenants, tag + cost, tenant)
      else
        redis.call('ZREM', tenants, tenant)
      end
      redis.call('ZREM', ARGV[1] .. 'since:' .. severity, id)
      local job = redis.call('HGET', KEYS[1], id)
      if job then
        redis.call('ZADD', KEYS[2], ARGV[3], id)
        redis.call('HSET', KEYS[4], id, ARGV[4])
        picked[#picked + 1] = {id, job, redis.call('HINCRBY', KEYS[3], id, 1)}
      end
    end
  end
end
return picked
"""
)

# Puts a job back at the head of its tenant's queue (its order kept), its tenant given a
# place at the severity's clock if it had none. The job's JSON is read for its severity,
# tenant, cost and when it was first scheduled: requeues are rare (a dead worker, a retry).
_REQUEUE = """
local function requeue(prefix, id, job)
  local doc = cjson.decode(job)
  local severity, tenant = doc['severity'], doc['tenant_id']
  local tenants = prefix .. 'tenants:' .. severity
  redis.call('LPUSH', prefix .. 'queue:' .. severity .. ':' .. tenant, doc['cost'] .. ' ' .. id)
  redis.call('ZADD', prefix .. 'since:' .. severity, math.floor(doc['scheduled_at'] * 1000), id)
  if not redis.call('ZSCORE', tenants, tenant) then
    local clock = tonumber(redis.call('HGET', prefix .. 'clock', severity) or '0')
    redis.call('ZADD', tenants, clock + tonumber(doc['cost']), tenant)
  end
end
"""

# KEYS: jobs, running, deliveries, later, owners. ARGV: prefix, now (ms), idle (ms), how
# many at most, MAX_DELIVERIES, this consumer. Returns {event id, job, deliveries} of the
# poison jobs: kept running under this consumer, for it to dead-letter (which ends them).
_REAP = (
    _REQUEUE
    + """
local now = tonumber(ARGV[2])
local poison = {}
local since = now - tonumber(ARGV[3])
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since, 'LIMIT', 0, ARGV[4])
for _, id in ipairs(idle) do
  local job = redis.call('HGET', KEYS[1], id)
  if not job then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[5], id)
  else
    local deliveries = tonumber(redis.call('HGET', KEYS[3], id) or '0')
    if deliveries >= tonumber(ARGV[5]) then
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HSET', KEYS[5], id, ARGV[6])
      poison[#poison + 1] = {id, job, deliveries}
    else
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[5], id)
      requeue(ARGV[1], id, job)
    end
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, ARGV[4])) do
  redis.call('ZREM', KEYS[4], id)
  local job = redis.call('HGET', KEYS[1], id)
  if job then requeue(ARGV[1], id, job) end
end
return poison
"""
)

# KEYS: jobs, running, owners. ARGV: prefix, this consumer. Returns how many went back.
_RECLAIM_OWN = (
    _REQUEUE
    + """
local back = 0
local owners = redis.call('HGETALL', KEYS[3])
for i = 1, #owners, 2 do
  local id, owner = owners[i], owners[i + 1]
  if owner == ARGV[2] then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    local job = redis.call('HGET', KEYS[1], id)
    if job then
      requeue(ARGV[1], id, job)
      back = back + 1
    end
  end
end
return back
"""
)

# KEYS: running, later, deliveries, owners, jobs. ARGV: event id, when it may go again
# (ms), now (ms), prefix. Due now: straight back to the head of its queue.
_LATER = (
    _REQUEUE
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
if tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  local job = redis.call('HGET', KEYS[5], ARGV[1])
  if job then requeue(ARGV[4], ARGV[1], job) end
end
return 1
"""
)


class RedisScheduler:
    """The scheduler on one Redis, as consumer ``consumer`` (``WORKER_ID``); ``commit``: the
    event path's group commit (picks ride in its transactions); ``idle_seconds``: how long
    a running job may go unrefreshed before it is taken back (``CLAIM_IDLE_SECONDS``)."""

    def __init__(
        self, redis: Redis, *, commit: GroupCommit, consumer: str, idle_seconds: float
    ) -> None:
        self._redis = redis
        self._commit = commit
        self._consumer = consumer
        self._idle_ms = int(idle_seconds * 1000)
        self._pick_sha = commit.load(_PICK)

    async def pick(self, wanted: int) -> list[Handed]:
        """Up to ``wanted`` waiting jobs, in the order of the scheduler, now running here."""
        keys = [Keys.SCHED_JOBS, Keys.SCHED_RUNNING, Keys.SCHED_DELIVERIES, Keys.SCHED_OWNERS]
        args = [Keys.SCHED, wanted, _now_ms(), self._consumer]

        def queue(pipe: Any) -> None:
            pipe.evalsha(self._pick_sha, len(keys), *keys, *args)

        async with unavailable_as_domain_error("pick"):
            (reply,) = await self._commit.submit(queue, scripts=(self._pick_sha,))
            if isinstance(reply, Exception):
                raise reply
        return [_handed(row) for row in reply]

    async def refresh(self, event_ids: Sequence[str]) -> None:
        """Mark these running jobs alive (those still running)."""
        if not event_ids:
            return
        now = _now_ms()
        async with unavailable_as_domain_error("scheduler_refresh"):
            await self._redis.zadd(Keys.SCHED_RUNNING, dict.fromkeys(event_ids, now), xx=True)

    async def reap(self, *, max_deliveries: int, limit: int = 500) -> list[Handed]:
        """Requeue the jobs not marked alive for ``CLAIM_IDLE_SECONDS`` and those whose
        retry is due; return the poison ones (handed out ``max_deliveries`` times), now
        running here, for the caller to dead-letter."""
        keys = [
            Keys.SCHED_JOBS,
            Keys.SCHED_RUNNING,
            Keys.SCHED_DELIVERIES,
            Keys.SCHED_LATER,
            Keys.SCHED_OWNERS,
        ]
        args: list[str | int] = [
            Keys.SCHED,
            _now_ms(),
            self._idle_ms,
            limit,
            max_deliveries,
            self._consumer,
        ]
        async with unavailable_as_domain_error("scheduler_reap"):
            reply = await self._redis.eval(_REAP, len(keys), *keys, *args)
        return [_handed(row) for row in reply]

    async def reclaim_own(self) -> int:
        """At start: give back at once the jobs still running under this consumer's name
        (it restarted); how many."""
        keys = [Keys.SCHED_JOBS, Keys.SCHED_RUNNING, Keys.SCHED_OWNERS]
        async with unavailable_as_domain_error("scheduler_reclaim"):
            back = await self._redis.eval(
                _RECLAIM_OWN, len(keys), *keys, Keys.SCHED, self._consumer
            )
        return int(back)

    async def later(self, event_id: str, delay_seconds: float) -> bool:
        """A running job waits ``delay_seconds`` before it is handed out again (no delivery
        counted); False if it no longer runs."""
        keys = [
            Keys.SCHED_RUNNING,
            Keys.SCHED_LATER,
            Keys.SCHED_DELIVERIES,
            Keys.SCHED_OWNERS,
            Keys.SCHED_JOBS,
        ]
        now = _now_ms()
        due = now + int(delay_seconds * 1000)
        async with unavailable_as_domain_error("scheduler_later"):
            moved = await self._redis.eval(_LATER, len(keys), *keys, event_id, due, now, Keys.SCHED)
        return bool(moved)

    async def stats(self, *, top: int = 5) -> WaitingStats:
        """What waits, for metrics and ``groq-worker status``."""
        return await waiting_stats(self._redis, top=top)


async def waiting_stats(redis: RedisClient, *, top: int = 5) -> WaitingStats:
    """What waits in the scheduler (read only): by severity, how many and since when; how
    many run and wait to be retried; the ``top`` tenants with the most waiting. Two round
    trips; the second reads the length of each waiting tenant's queues."""
    async with unavailable_as_domain_error("scheduler_stats"):
        async with redis.pipeline(transaction=False) as pipe:
            for severity in SEVERITY_ORDER:
                pipe.zcard(Keys.sched_since(severity))
                pipe.zrange(Keys.sched_since(severity), 0, 0, withscores=True)
                pipe.zrange(Keys.sched_tenants(severity), 0, -1)
            pipe.zcard(Keys.SCHED_RUNNING)
            pipe.zcard(Keys.SCHED_LATER)
            replies = await pipe.execute()
        waiting, oldest, queues = {}, {}, []
        for index, severity in enumerate(SEVERITY_ORDER):
            count, first, tenants = replies[3 * index : 3 * index + 3]
            waiting[severity.value] = int(count)
            oldest[severity.value] = first[0][1] / 1000 if first else None
            queues += [(as_text(t), Keys.sched_queue(severity, as_text(t))) for t in tenants]
        running, later = int(replies[-2]), int(replies[-1])
        per_tenant: dict[str, int] = {}
        if queues:
            async with redis.pipeline(transaction=False) as pipe:
                for _, key in queues:
                    pipe.llen(key)
                lengths = await pipe.execute()
            for (tenant, _), length in zip(queues, lengths, strict=True):
                per_tenant[tenant] = per_tenant.get(tenant, 0) + int(length)
    ranked = sorted(per_tenant.items(), key=lambda item: (-item[1], item[0]))[:top]
    return WaitingStats(waiting, oldest, running, later, ranked)


def _handed(row: Any) -> Handed:
    _id, job, deliveries = row
    return Handed(Job.model_validate_json(job), int(deliveries))


def _now_ms() -> int:
    return int(time.time() * 1000)
