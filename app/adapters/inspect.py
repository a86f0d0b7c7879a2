"""What an operator (or the metrics sampler) can learn about the worker from Redis.

The consumer group's lag and pending list, its consumers, the dead-letter queue and the
tenants' hourly budgets, read with bounded commands (``XINFO``, ``XPENDING``, ``LRANGE``
in chunks, ``SCAN``). Used by ``groq-worker status``, ``groq-worker consumers prune`` and
the sampler behind ``acp_groq_group_lag``/``_pending``/``acp_groq_dlq_size``.

Everything here only reads, except ``delete_consumer_if_idle``: it deletes a consumer
in one script that re-checks, at the moment of deletion, that the consumer holds no
pending entry and has been idle long enough. (``XGROUP DELCONSUMER`` drops a consumer's
pending entries with it, and those would then never be delivered again.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from app.adapters.dlq import dlq_size
from app.adapters.redis_replies import as_text, int_or_none
from app.domain.keys import Keys

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient

__all__ = [
    "ConsumerInfo",
    "DeleteVerdict",
    "DlqSummary",
    "GroupInfo",
    "OldestPending",
    "RateLimits",
    "TenantBudget",
    "consumers",
    "delete_consumer_if_idle",
    "dlq_summary",
    "group_info",
    "oldest_pending",
    "prune_candidates",
    "rate_limits",
    "stream_length",
]

UNREADABLE = "unreadable"


def _field(info: dict[Any, Any], name: str) -> Any:
    """A field of an ``XINFO`` reply, whether the client decodes responses or not."""
    if name in info:
        return info[name]
    return info.get(name.encode())


def _no_such_key(exc: ResponseError) -> bool:
    return "no such key" in str(exc).lower()


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group, as ``XINFO GROUPS`` reports it.

    ``lag`` is the entries not yet delivered to the group; Redis cannot always compute
    it (after ``XDEL`` or a trim past undelivered entries) and reports nil: ``None``.
    """

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of the group (``XINFO CONSUMERS``); ``idle_ms`` since it last read."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None = None  # Redis 7.2+: since its last successful read


@dataclass(frozen=True, slots=True)
class OldestPending:
    """The oldest entry delivered and not acknowledged.

    ``age_ms`` is how long ago it entered the stream (from its id and Redis's clock),
    ``idle_ms`` how long ago it was last delivered, to ``consumer``, ``deliveries`` times.
    """

    entry_id: str
    consumer: str
    age_ms: int
    idle_ms: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class DlqSummary:
    """The DLQ's size and its letters counted by ``reason`` (the newest ``scanned`` ones)."""

    size: int
    scanned: int
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's enrichments in its current hour and the seconds until the hour resets."""

    tenant_id: str
    used: int
    ttl_seconds: int | None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """How many tenants have a budget counter, and the busiest of them."""

    tenants: int
    busiest: list[TenantBudget]
    truncated: bool = False  # more counters than were read


class DeleteVerdict(StrEnum):
    DELETED = "deleted"
    BUSY = "busy"  # holds pending entries, or read recently: kept
    GONE = "gone"  # no such consumer (any more)


async def stream_length(redis: RedisClient, stream: str) -> int:
    """``XLEN``: 0 for a stream that does not exist."""
    return int(await redis.xlen(stream))


async def group_info(redis: RedisClient, stream: str, group: str) -> GroupInfo | None:
    """The group on ``stream``, or None if the stream or the group does not exist."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if _no_such_key(exc):
            return None
        raise
    for info in groups:
        if as_text(_field(info, "name")) == group:
            return GroupInfo(
                name=group,
                consumers=int(_field(info, "consumers") or 0),
                pending=int(_field(info, "pending") or 0),
                last_delivered_id=as_text(_field(info, "last-delivered-id")),
                entries_read=int_or_none(_field(info, "entries-read")),
                lag=int_or_none(_field(info, "lag")),
            )
    return None


async def consumers(redis: RedisClient, stream: str, group: str) -> list[ConsumerInfo]:
    """The group's consumers, busiest first (most pending, then most recently active)."""
    try:
        replies = await redis.xinfo_consumers(stream, group)
    except ResponseError as exc:
        if _no_such_key(exc) or str(exc).startswith("NOGROUP"):
            return []
        raise
    found = [
        ConsumerInfo(
            name=as_text(_field(info, "name")),
            pending=int(_field(info, "pending") or 0),
            idle_ms=int(_field(info, "idle") or 0),
            inactive_ms=int_or_none(_field(info, "inactive")),
        )
        for info in replies
    ]
    return sorted(found, key=lambda c: (-c.pending, c.idle_ms, c.name))


async def redis_time_ms(redis: RedisClient) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def oldest_pending(redis: RedisClient, stream: str, group: str) -> OldestPending | None:
    """The oldest pending entry of the group, or None when nothing is pending."""
    try:
        rows = await redis.xpending_range(stream, group, min="-", max="+", count=1)
    except ResponseError as exc:
        if _no_such_key(exc) or str(exc).startswith("NOGROUP"):
            return None
        raise
    if not rows:
        return None
    row = rows[0]
    entry_id = as_text(row["message_id"])
    now_ms = await redis_time_ms(redis)
    entered_ms = int(entry_id.split("-", 1)[0])
    return OldestPending(
        entry_id=entry_id,
        consumer=as_text(row["consumer"]),
        age_ms=max(0, now_ms - entered_ms),
        idle_ms=int(row["time_since_delivered"]),
        deliveries=int(row["times_delivered"]),
    )


def _reason_of(letter: Any) -> str:
    try:
        doc = json.loads(letter)
    except (TypeError, ValueError):
        return UNREADABLE
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason if isinstance(reason, str) and reason else UNREADABLE


async def dlq_summary(
    redis: RedisClient, *, max_letters: int = 10_000, chunk: int = 500
) -> DlqSummary:
    """Dead letters counted by reason, reading at most the newest ``max_letters``.

    The list is read in chunks so that a DLQ of large letters is never one huge reply.
    Letters that are not JSON with a ``reason`` are counted as ``unreadable``.
    """
    size = await dlq_size(redis)
    reasons: Counter[str] = Counter()
    scanned = 0
    limit = min(size, max(0, max_letters))
    while scanned < limit:
        stop = min(limit, scanned + chunk) - 1
        letters = await redis.lrange(Keys.DLQ, scanned, stop)
        if not letters:  # the list shrank under us (a replay is running)
            break
        reasons.update(_reason_of(letter) for letter in letters)
        scanned += len(letters)
    return DlqSummary(size=size, scanned=scanned, reasons=dict(reasons.most_common()))


async def rate_limits(
    redis: RedisClient, *, top: int = 10, max_keys: int = 100_000, scan_count: int = 1000
) -> RateLimits:
    """The tenants with the most enrichments this hour (``SCAN acp:groq:rate_limit:*``)."""
    prefix = Keys.rate_limit("")
    keys: list[Any] = []
    truncated = False
    async for key in redis.scan_iter(match=f"{prefix}*", count=scan_count):
        if len(keys) >= max_keys:
            truncated = True
            break
        keys.append(key)
    budgets: list[TenantBudget] = []
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute(raise_on_error=False)
        for index, key in enumerate(batch):
            used, ttl = replies[2 * index], replies[2 * index + 1]
            used_count = int_or_none(as_text(used)) if used is not None else None
            if used_count is None:  # expired between SCAN and GET, or not a counter
                continue
            ttl_seconds = int_or_none(ttl)
            budgets.append(
                TenantBudget(
                    tenant_id=as_text(key).removeprefix(prefix),
                    used=used_count,
                    ttl_seconds=ttl_seconds
                    if ttl_seconds is not None and ttl_seconds >= 0
                    else None,
                )
            )
    budgets.sort(key=lambda budget: (-budget.used, budget.tenant_id))
    return RateLimits(tenants=len(budgets), busiest=budgets[: max(0, top)], truncated=truncated)


def prune_candidates(found: Iterable[ConsumerInfo], min_idle_ms: int) -> list[ConsumerInfo]:
    """Consumers that hold nothing and have not read for at least ``min_idle_ms``."""
    return [c for c in found if c.pending == 0 and c.idle_ms >= min_idle_ms]


# Re-checks and deletes in one step: a consumer that read (and so may hold entries)
# since it was listed is kept. Returns 1 deleted, 0 kept, -1 no such consumer.
_DELETE_IF_IDLE = """
local found = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, consumer in ipairs(found) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return -1
"""


async def delete_consumer_if_idle(
    redis: RedisClient, stream: str, group: str, consumer: str, min_idle_ms: int
) -> DeleteVerdict:
    """Delete ``consumer`` only if, right now, it holds nothing and idled ``min_idle_ms``."""
    verdict = await redis.eval(_DELETE_IF_IDLE, 1, stream, group, consumer, min_idle_ms)
    if int(verdict) == 1:
        return DeleteVerdict.DELETED
    if int(verdict) == 0:
        return DeleteVerdict.BUSY
    return DeleteVerdict.GONE
