"""``InsightStore`` on a Redis Cluster: each step of one event touches one hash slot.

On a single Redis the admission of an event is one script and its writes one MULTI/EXEC
(``app/adapters/redis_store.py``). In a cluster the contract's keys of one event live in
different slots (the insight, the timeline, the tenant's and the agent's index, the
insights stream, the inbound stream, the tenant's counter), and no script or transaction
may span slots. So every step below touches one slot, and the order of the steps is the
argument that a crash between any two of them loses nothing and duplicates nothing that
matters:

Admission
  1. **claim** (the event's slot): owner, lease and the insight are read, the lease is
     taken. An insight with no lease is complete: a duplicate. An insight with a lease is
     a write that a crash cut short: it is *resumed* (step W2 onwards, from the stored
     record: no model call), and the delivery then ends as a duplicate.
  2. **charge** (the tenant's slot): one script counts the event in the tenant's hour
     and records that it did, in a set beside the counter; a redelivery of a charged
     event is not charged again, so the counter is exact and never passes the budget.
Writes (after the model answered)
  W1. **store** (the event's slot): the insight with its full record, and the owner. From
      here a redelivery needs no model call.
  W2. **index**: timeline, tenant's index, agent's index: each on its own slot, all
      idempotent (ZADD of the same member and score, LREM before LPUSH), sent together
      in one pipeline per node.
  W3. **announce**: ``InsightCreated`` on ``acp:groq:insights:stream`` (not idempotent: a
      crash between W3 and W4 announces the insight twice on the redelivery).
  W4. **release** (the event's slot): the lease is deleted: the write is complete.
  W5. **XACK** last.

The internal keys an event's steps need together share its slot through a hash tag
naming the contract key (``{acp:groq:insight:<id>}:lease``): the contract's key names do
not change. Concurrent events still share round trips: each step of the events ready
together is one pipeline, split by redis-py per node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.adapters.redis_batch import GroupCommit
from app.adapters.redis_errors import says_not_now
from app.adapters.redis_replies import as_text
from app.adapters.redis_store import (
    pushed,
    raise_errors,
    times_delivered,
    unavailable_as_domain_error,
)
from app.domain.insights import InsightRecord
from app.domain.keys import (
    AGENT_LIST_KEEP,
    BUDGET_WINDOW_SECONDS,
    DLQ_MAX_ENTRIES,
    INSIGHT_TTL_SECONDS,
    TIMELINE_KEEP,
    ClusterKeys,
    Keys,
)
from app.domain.ports import Admission, DeadLettered, EntryRef, Publish, ScheduleRequest

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster

__all__ = ["Announce", "RedisClusterInsightStore"]

Announce = Callable[[InsightRecord], Awaitable[Any]]
"""Publishes ``InsightCreated`` for a stored record (its JSON): the resumed write's W3."""

# KEYS: insight, owner, lease (one slot). ARGV: tenant, this entry ('' without a lease),
# insight TTL, lease TTL, a stale holder this delivery may take the lease over from.
_CLAIM = """
local owner = redis.call('GET', KEYS[2])
local exists = redis.call('EXISTS', KEYS[1]) == 1
if owner then
  if owner ~= ARGV[1] then return {'conflict'} end
elseif exists then
  local ok, doc = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if not (ok and type(doc) == 'table' and doc['tenant_id'] == ARGV[1]) then
    return {'conflict'}
  end
end
local holder = redis.call('GET', KEYS[3])
if exists and not holder then return {'duplicate'} end
if ARGV[2] == '' then
  if exists then return {'duplicate'} end
else
  if holder and holder ~= ARGV[2] and holder ~= ARGV[5] then return {'held', holder} end
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[4])
end
local created = 0
if not owner then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  created = 1
end
if exists then return {'resume'} end
return {'claimed', created}
"""

# KEYS: the tenant's counter, the set of events it counted (one slot). ARGV: event id,
# budget, window. Over budget: counted (as on a single Redis), not admitted, not recorded.
_CHARGE = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'admitted' end
local used = redis.call('INCR', KEYS[1])
if used == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if used > tonumber(ARGV[2]) then return 'rate_limited' end
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('TTL', KEYS[2]) < 0 then
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
end
return 'admitted'
"""

# A rate-limited claim lets go. KEYS: insight, owner, lease. ARGV: this entry, whether the
# claim created the owner.
_UNCLAIM = """
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""

# W1. KEYS: insight, owner. ARGV: record, TTL, tenant.
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
return 1
"""

# W2, one index. KEYS: a ZSET. ARGV: member, score, how many to keep.
_INDEX_ZSET = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
return 1
"""

# W2, the agent's list. KEYS: the LIST. ARGV: member, how many to keep.
_INDEX_LIST = """
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""

# W4. KEYS: lease. ARGV: this entry.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A dead letter, once per entry even if the XACK after it is lost to a crash; the DLQ kept
# within its cap (the oldest letters go). KEYS: DLQ, the entry's marker (one slot). ARGV:
# the letter, the marker's TTL, the cap. Returns the length before the trim.
_DEAD_LETTER = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  local length = redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
  return length
end
return redis.call('LLEN', KEYS[1])
"""


class RedisClusterInsightStore:
    """``InsightStore`` on a Redis Cluster (redis-py's asyncio ``RedisCluster``).

    ``announce`` publishes ``InsightCreated`` for a stored record, for a write that is
    resumed after a crash (the service's ``publish`` is not at hand then).
    """

    def __init__(
        self, redis: RedisCluster, *, announce: Announce, dlq_max_entries: int = DLQ_MAX_ENTRIES
    ) -> None:
        self._redis = redis
        self._announce = announce
        self._dlq_max = dlq_max_entries
        # One pipeline per step of the events ready together; redis-py splits each by node.
        self._steps = {
            name: GroupCommit(redis, transaction=False)  # type: ignore[arg-type]
            for name in ("claim", "charge", "store", "index", "release", "ack")
        }

    @property
    def round_trips(self) -> int:
        """Pipelines sent so far (each reaches every node it names at once)."""
        return sum(step.batches for step in self._steps.values())

    async def _run(self, step: str, queue: Callable[[ClusterPipeline], Any]) -> list[Any]:
        """Queue commands on the step's next pipeline; their replies (a gone group's: kept).

        Redis out of reach or refusing raises ``StoreUnavailable`` (the service waits)."""

        def queue_only(pipe: ClusterPipeline) -> None:
            queue(pipe)  # what the pipeline's methods return (the pipeline) is not awaited

        async with unavailable_as_domain_error(step):
            replies = await self._steps[step].submit(queue_only)  # type: ignore[arg-type]
            # A cluster pipeline returns a node's connection error as that node's replies
            # (raise_on_error=False): it is an outage to wait out, not an answer.
            for reply in replies:
                if isinstance(reply, Exception) and says_not_now(reply):
                    raise reply
            return raise_errors(replies)

    async def _eval(self, step: str, script: str, keys: list[str], args: list[Any]) -> Any:
        (reply,) = await self._run(step, lambda pipe: pipe.eval(script, len(keys), *keys, *args))
        return reply

    # -- admission ----------------------------------------------------------------------

    async def admit(
        self,
        *,
        event_id: str,
        tenant_id: str,
        budget: int,
        entry: EntryRef | None = None,
        schedule: ScheduleRequest | None = None,
    ) -> Admission:
        if schedule is not None:  # the settings refuse EVENT_ORDER=priority in a cluster
            raise ValueError("the scheduler does not run on a Redis Cluster")
        verdict = await self._claim(event_id, tenant_id, entry, stale="")
        if verdict[0] == "held":
            assert entry is not None
            if await self._pending(entry, verdict[1]):
                return Admission.DUPLICATE  # its holder's own outcome stands for the event
            verdict = await self._claim(event_id, tenant_id, entry, stale=verdict[1])
            if verdict[0] == "held":  # another delivery took the stale lease over first
                return Admission.DUPLICATE
        if verdict[0] == "conflict":
            return Admission.CONFLICT
        if verdict[0] == "duplicate":
            return Admission.DUPLICATE
        if verdict[0] == "resume":
            await self._resume(event_id, entry)
            return Admission.DUPLICATE
        charged = await self._eval(
            "charge",
            _CHARGE,
            [Keys.rate_limit(tenant_id), Keys.charged(tenant_id)],
            [event_id, budget, BUDGET_WINDOW_SECONDS],
        )
        if as_text(charged) == "rate_limited":
            await self._eval(
                "claim",
                _UNCLAIM,
                [Keys.insight(event_id), ClusterKeys.owner(event_id), ClusterKeys.lease(event_id)],
                [entry.entry_id if entry else "", verdict[1]],
            )
            return Admission.RATE_LIMITED
        return Admission.ADMITTED

    async def _claim(
        self, event_id: str, tenant_id: str, entry: EntryRef | None, *, stale: str
    ) -> list[str]:
        reply = await self._eval(
            "claim",
            _CLAIM,
            [Keys.insight(event_id), ClusterKeys.owner(event_id), ClusterKeys.lease(event_id)],
            [
                tenant_id,
                entry.entry_id if entry else "",
                INSIGHT_TTL_SECONDS,
                BUDGET_WINDOW_SECONDS,
                stale,
            ],
        )
        return [as_text(part) for part in reply]

    async def _pending(self, entry: EntryRef, holder: str) -> bool:
        """Is ``holder`` (another entry) still pending in the group? (A gone group: no.)"""
        (held,) = await self._run(
            "claim",
            lambda pipe: pipe.xpending_range(entry.stream, entry.group, holder, holder, 1),
        )
        return bool(held) and not isinstance(held, Exception)

    async def _resume(self, event_id: str, entry: EntryRef | None) -> None:
        """Finish a write a crash cut short: W2 to W4 from the stored record (W5 follows)."""
        (stored,) = await self._run("store", lambda pipe: pipe.get(Keys.insight(event_id)))
        if stored is None:  # expired since the claim: nothing left to complete
            return
        record = InsightRecord.model_validate_json(stored)
        await self._index(record.event_id, record.tenant_id, record.agent_id, record.timestamp)
        await self._announce(record)
        await self._release(event_id, entry)

    # -- writes ---------------------------------------------------------------------------

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
        await self._eval(
            "store",
            _STORE,
            [Keys.insight(event_id), ClusterKeys.owner(event_id)],
            [record_json, INSIGHT_TTL_SECONDS, tenant_id],
        )
        await self._index(event_id, tenant_id, agent_id, score)
        async with unavailable_as_domain_error("announce"):
            await publish(None)  # a cluster has no transaction to publish in
        await self._release(event_id, entry)
        await self.ack(entry)

    async def _index(self, event_id: str, tenant_id: str, agent_id: str, score: float) -> None:
        def queue(pipe: ClusterPipeline) -> None:
            for key in (Keys.TIMELINE, Keys.by_tenant(tenant_id)):
                pipe.eval(_INDEX_ZSET, 1, key, event_id, score, TIMELINE_KEEP)
            pipe.eval(_INDEX_LIST, 1, Keys.by_agent(agent_id), event_id, AGENT_LIST_KEEP)

        await self._run("index", queue)

    async def _release(self, event_id: str, entry: EntryRef | None) -> None:
        if entry is not None:
            await self._eval("release", _RELEASE, [ClusterKeys.lease(event_id)], [entry.entry_id])

    async def dead_letter(self, entry: EntryRef, letter_json: str) -> DeadLettered:
        """Push the dead letter (once per entry, the DLQ capped), then XACK its entry."""
        length = await self._eval(
            "store",
            _DEAD_LETTER,
            [Keys.DLQ, ClusterKeys.dead_letter_mark(entry.stream, entry.entry_id)],
            [letter_json, INSIGHT_TTL_SECONDS, self._dlq_max],
        )
        await self.ack(entry)
        return pushed(length, self._dlq_max)

    async def deliveries(self, entry: EntryRef) -> int:
        return await times_delivered(self._redis, entry)

    async def ack(self, entry: EntryRef) -> None:
        await self._run("ack", lambda pipe: pipe.xack(entry.stream, entry.group, entry.entry_id))
