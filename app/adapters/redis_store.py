"""The Redis side of one event: admission (idempotency, ownership, budget) and the writes.

The keys are named in ``app.domain.keys``. The writes of one event and its XACK go in
one MULTI/EXEC, so a crash leaves either all of them or none (and then
the entry is still pending and will be delivered again). Admissions ride in the same
transactions (``RedisInsightStore``): one round trip for whatever a batch asks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from app.adapters.redis_batch import GroupCommit
from app.adapters.redis_errors import refusal_reason, says_not_now
from app.domain.errors import StoreUnavailable
from app.domain.keys import (
    AGENT_LIST_KEEP,
    BUDGET_WINDOW_SECONDS,
    DLQ_MAX_ENTRIES,
    INSIGHT_TTL_SECONDS,
    SCHEDULED_HOLD_SECONDS,
    TIMELINE_KEEP,
    Keys,
)
from app.domain.ports import Admission, DeadLettered, EntryRef, Publish, ScheduleRequest
from app.domain.text import as_text

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster

__all__ = [
    "RedisInsightStore",
    "end_in",
    "push_letter",
    "pushed",
    "raise_errors",
    "times_delivered",
    "unavailable_as_domain_error",
]

# Admission in one atomic step: ownership of the event id, an existing insight, another
# entry of the same event in flight, the tenant's hourly budget. The owner key makes "never
# overwrite another tenant's insight" hold even for two deliveries in flight at once; the
# budget counter gets its TTL in the same script that creates it, so no crash can leave a
# counter that never expires.
#
# The lease names the stream entry that is enriching the event. Another entry of the same
# event (the gateway wrote it twice, both read at once) is a duplicate while the lease
# holder is still pending in the group: the holder's own outcome stands for the event, and
# if its worker dies the holder is claimed again (same entry, so it takes the lease over).
# Once the holder is acked (enriched or dead-lettered) its lease is stale and ignored, so a
# replayed dead letter is admitted. A lease saying 'lane' is an event waiting in the batch
# lane (its entry acked, its request kept): another copy is a duplicate until the lane
# writes the insight or the dead letter, which end the lease.
#
# The budget is charged once per event: the script records the events it counted in a
# set beside the tenant's counter (expiring with it), and a delivery of a counted event
# (a redelivery after a crash, a claim by another worker, a copy after its holder was
# dead-lettered) is admitted without counting it again.
#
# EVENT_ORDER=priority (ARGV[8] is the severity): an admitted event runs now only if this
# process has a free model slot for it (ARGV[9]) and no event of its severity or a more
# urgent one waits in the scheduler; otherwise it is scheduled, in this same script: its
# job kept, queued behind its tenant's waiting events of its severity, its tenant given a
# place among that severity's tenants if it had none (app/domain/scheduling.py), its
# lease set to 'sched' (a copy arriving meanwhile is a duplicate) and its entry acked.
# With a time (ARGV[16]: an admitted event that must wait, e.g. for flex capacity), the
# job waits among the retries later instead (the reaper queues it when the time comes).
# Nothing is acknowledged without its job kept, and nothing is charged twice. An event
# that expects to run now may leave its job out (ARGV[13] empty: building and sending it
# is most of the cost of an event that runs at once); if it must wait after all, the
# answer is 'must_wait' (charged, nothing else done) and it asks again with the job.
#
# The look-ahead (ARGV[17] = '1', app/service/lookahead.py) schedules urgent events read
# ahead of the group's position: their entries are not delivered yet, so they are marked
# in a set (KEYS[8]); their delivery, when the group reaches them, finds its mark and is
# 'ahead' (acknowledged, no outcome: the job's is the event's). A look-ahead refused for
# the budget takes its count back: the delivery will count it.
_ADMIT = """
if ARGV[17] ~= '1' and ARGV[5] ~= '' and redis.call('SREM', KEYS[8], ARGV[5]) == 1 then
  return 'ahead'
end
local owner = redis.call('GET', KEYS[2])
if owner then
  if owner ~= ARGV[1] then return 'conflict' end
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'duplicate' end
else
  local existing = redis.call('GET', KEYS[1])
  if existing then
    local ok, doc = pcall(cjson.decode, existing)
    if ok and type(doc) == 'table' and doc['tenant_id'] == ARGV[1] then
      return 'duplicate'
    end
    return 'conflict'
  end
end
if ARGV[5] ~= '' then
  local holder = redis.call('GET', KEYS[4])
  if holder == 'lane' or holder == 'sched' then return 'duplicate' end
  if holder and ARGV[17] == '1' then return 'duplicate' end  -- a delivery is on it
  if holder and holder ~= ARGV[5] then
    local held = redis.pcall('XPENDING', KEYS[5], ARGV[6], holder, holder, 1)
    if type(held) == 'table' and held.err == nil and #held > 0 then return 'duplicate' end
  end
end
if redis.call('SISMEMBER', KEYS[6], ARGV[7]) == 0 then
  local used = redis.call('INCR', KEYS[3])
  if used == 1 or redis.call('TTL', KEYS[3]) < 0 then
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
  if used > tonumber(ARGV[2]) then
    if ARGV[17] == '1' then redis.call('DECR', KEYS[3]) end
    return 'rate_limited'
  end
  redis.call('SADD', KEYS[6], ARGV[7])
  if redis.call('TTL', KEYS[6]) < 0 then
    redis.call('PEXPIRE', KEYS[6], redis.call('PTTL', KEYS[3]))
  end
end
if ARGV[8] ~= '' then
  local wait = ARGV[9] ~= '1'
  local severities = {'critical', 'high', 'medium', 'low'}
  for r = 1, tonumber(ARGV[10]) + 1 do
    if wait then break end
    wait = redis.call('ZCARD', ARGV[15] .. 'since:' .. severities[r]) > 0
  end
  if wait then
    if ARGV[13] == '' then return 'must_wait' end  -- asked without its job: ask again
    redis.call('HSET', KEYS[7], ARGV[7], ARGV[13])
    if ARGV[16] ~= '' then
      redis.call('ZADD', ARGV[15] .. 'later', ARGV[16], ARGV[7])
    else
      local tenants = ARGV[15] .. 'tenants:' .. ARGV[8]
      local queue = ARGV[15] .. 'queue:' .. ARGV[8] .. ':' .. ARGV[1]
      redis.call('RPUSH', queue, ARGV[12] .. ' ' .. ARGV[7])
      redis.call('ZADD', ARGV[15] .. 'since:' .. ARGV[8], ARGV[14], ARGV[7])
      if not redis.call('ZSCORE', tenants, ARGV[1]) then
        local now = tonumber(redis.call('HGET', ARGV[15] .. 'clock', ARGV[8]) or '0')
        redis.call('ZADD', tenants, now + tonumber(ARGV[12]), ARGV[1])
      end
    end
    redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[11])
    redis.call('SET', KEYS[4], 'sched', 'EX', ARGV[11])
    if ARGV[17] == '1' then
      redis.call('SADD', KEYS[8], ARGV[5])
    else
      redis.pcall('XACK', KEYS[5], ARGV[6], ARGV[5])
    end
    return 'scheduled'
  end
end
if not owner then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[4]) end
return 'admitted'
"""


# The writes of one enriched event, in one script (one command instead of nine: the
# client's cost per command is what limits throughput, not Redis). It runs inside the
# batch's MULTI/EXEC together with the InsightCreated XADD. The XACK goes last and
# through pcall: when the group vanished (Redis restarted empty) there is nothing left
# to acknowledge, and the insight must still be written.
_WRITE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[5]) + 1))
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[5]) + 1))
redis.call('LREM', KEYS[5], 0, ARGV[3])
redis.call('LPUSH', KEYS[5], ARGV[3])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
if ARGV[9] ~= '' then
  -- an event the scheduler handed out: its entry was acked then; its job ends here
  redis.call('HDEL', KEYS[6], ARGV[9])
  redis.call('ZREM', KEYS[7], ARGV[9])
  redis.call('HDEL', KEYS[8], ARGV[9])
  redis.call('HDEL', KEYS[9], ARGV[9])
  return 1
end
local acked = redis.pcall('XACK', KEYS[6], ARGV[7], ARGV[8])
if type(acked) == 'table' and acked.err and not string.find(acked.err, '^NOGROUP') then
  return acked
end
return 1
"""


@asynccontextmanager
async def unavailable_as_domain_error(operation: str) -> AsyncIterator[None]:
    """Redis away or refusing for now is ``StoreUnavailable`` (the service waits, retries)."""
    try:
        yield
    except Exception as exc:
        if not says_not_now(exc):
            raise
        raise StoreUnavailable(
            f"{operation}: {type(exc).__name__}: {exc}", reason=refusal_reason(exc)
        ) from exc


async def times_delivered(redis: Redis | RedisCluster, entry: EntryRef) -> int:
    """The entry's delivery count from the group's pending list (1 when not pending)."""
    async with unavailable_as_domain_error("deliveries"):
        pending = await redis.xpending_range(
            entry.stream, entry.group, entry.entry_id, entry.entry_id, 1
        )
    return int(pending[0]["times_delivered"]) if pending else 1


def raise_errors(results: list[Any]) -> list[Any]:
    """Raise the first error of a transaction's replies, but a vanished group's XACK.

    When the stream or group is gone (Redis restarted empty), there is nothing left to
    acknowledge: the writes are what matter, and they were made.
    """
    for result in results:
        if isinstance(result, ResponseError) and not str(result).startswith("NOGROUP"):
            raise result
    return results


def push_letter(pipe: Pipeline | ClusterPipeline, letter_json: str, max_entries: int) -> None:
    """Queue a dead letter's push onto the DLQ, and the trim that keeps it within
    ``max_entries`` (the oldest letters, at the tail, go first). Two replies, see
    ``pushed``."""
    pipe.lpush(Keys.DLQ, letter_json)
    pipe.ltrim(Keys.DLQ, 0, max_entries - 1)


def end_in(pipe: Pipeline | ClusterPipeline, entry: EntryRef) -> None:
    """Queue the end of ``entry`` with its outcome's writes: its XACK, or, for an event the
    scheduler handed out (acked when it was scheduled), the removal of its job."""
    if entry.job:
        pipe.hdel(Keys.SCHED_JOBS, entry.job)
        pipe.zrem(Keys.SCHED_RUNNING, entry.job)
        pipe.hdel(Keys.SCHED_DELIVERIES, entry.job)
        pipe.hdel(Keys.SCHED_OWNERS, entry.job)
    else:
        pipe.xack(entry.stream, entry.group, entry.entry_id)


def pushed(length: Any, max_entries: int) -> DeadLettered:
    """What a ``push_letter`` did, from the LPUSH's reply (the length before the trim)."""
    length = int(length)
    return DeadLettered(min(length, max_entries), max(0, length - max_entries))


class RedisInsightStore:
    """``InsightStore`` on a real Redis (redis-py's asyncio client).

    Everything the events of one pass of the event loop ask of Redis goes in one
    MULTI/EXEC: the admissions of the events just read and the writes (with their XACKs)
    of the events just finished alike. One round trip per batch, not one per kind of step:
    with answers spread over time (a model taking 250 ms) the batches are small, and
    admissions and writes riding together halve the trips.
    """

    def __init__(self, redis: Redis, *, dlq_max_entries: int = DLQ_MAX_ENTRIES) -> None:
        self.redis = redis
        self._dlq_max = dlq_max_entries
        # One transaction for whatever the events of a pass of the loop ask (the scheduler
        # joins it too: ``commit``); its scripts are loaded at the start of each.
        self.commit = GroupCommit(redis, transaction=True)
        self._admit_sha = self.commit.load(_ADMIT)
        self._write_sha = self.commit.load(_WRITE)

    @property
    def round_trips(self) -> int:
        """Transactions sent so far (admissions and writes), for benchmarks and tests."""
        return self.commit.batches

    async def admit(
        self,
        *,
        event_id: str,
        tenant_id: str,
        budget: int,
        entry: EntryRef | None = None,
        schedule: ScheduleRequest | None = None,
    ) -> Admission:
        """The verdict on one delivery; ``entry`` (the delivered entry) enables the lease,
        ``schedule`` lets an event that cannot run now wait in the scheduler."""
        keys = [
            Keys.insight(event_id),
            Keys.owner(event_id),
            Keys.rate_limit(tenant_id),
            Keys.lease(event_id),
            entry.stream if entry else "",
            Keys.charged(tenant_id),
            Keys.SCHED_JOBS,
            Keys.SCHED_AHEAD,
        ]
        args: list[str | int | float] = [
            tenant_id,
            budget,
            INSIGHT_TTL_SECONDS,
            BUDGET_WINDOW_SECONDS,
            entry.entry_id if entry else "",
            entry.group if entry else "",
            event_id,
        ]
        if schedule is not None:
            args += [
                schedule.severity,
                int(schedule.may_run),
                schedule.rank,
                SCHEDULED_HOLD_SECONDS,
                schedule.cost,
                schedule.job_json,
                int(time.time() * 1000),
                Keys.SCHED,
                "" if schedule.later_ms is None else schedule.later_ms,
                "1" if schedule.ahead else "",
            ]
        else:
            args.append("")

        def queue(pipe: Pipeline) -> None:
            pipe.evalsha(self._admit_sha, len(keys), *keys, *args)

        async with unavailable_as_domain_error("admit"):
            (verdict,) = await self.commit.submit(queue, scripts=(self._admit_sha,))
            if isinstance(verdict, Exception):  # the script's error reply
                raise verdict
        return Admission(as_text(verdict))

    async def write_insight(
        self,
        entry: EntryRef,
        *,
        event_id: str,
        tenant_id: str,
        agent_id: str,
        score: float,
        record_json: str,
        publish: Publish,
    ) -> None:
        keys = [
            Keys.insight(event_id),
            Keys.lease(event_id),
            Keys.TIMELINE,
            Keys.by_tenant(tenant_id),
            Keys.by_agent(agent_id),
            Keys.SCHED_JOBS if entry.job else entry.stream,
            Keys.SCHED_RUNNING,
            Keys.SCHED_DELIVERIES,
            Keys.SCHED_OWNERS,
        ]
        args: list[str | int | float] = [
            record_json,
            INSIGHT_TTL_SECONDS,
            event_id,
            score,
            TIMELINE_KEEP,
            AGENT_LIST_KEEP,
            entry.group,
            entry.entry_id,
            entry.job or "",
        ]

        async def queue(pipe: Pipeline) -> None:
            pipe.evalsha(self._write_sha, len(keys), *keys, *args)
            await publish(pipe)

        async with unavailable_as_domain_error("write_insight"):
            raise_errors(await self.commit.submit(queue, scripts=(self._write_sha,)))

    async def dead_letter(self, entry: EntryRef, letter_json: str) -> DeadLettered:
        """Push the dead letter (the DLQ capped) and XACK its entry together."""

        def queue(pipe: Pipeline) -> None:
            push_letter(pipe, letter_json, self._dlq_max)
            end_in(pipe, entry)

        async with unavailable_as_domain_error("dead_letter"):
            length, *_ = raise_errors(await self.commit.submit(queue))
        return pushed(length, self._dlq_max)

    async def deliveries(self, entry: EntryRef) -> int:
        return await times_delivered(self.redis, entry)

    async def ack(self, entry: EntryRef) -> None:
        def queue(pipe: Pipeline) -> None:
            end_in(pipe, entry)

        async with unavailable_as_domain_error("ack"):
            raise_errors(await self.commit.submit(queue))
