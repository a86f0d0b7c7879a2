"""One consumer's view of the group's pending entries: claim, refresh, hand back, prune.

The Redis side of ``app/handlers/recovery.py``: each method is a bounded command or two
(``XPENDING``, ``XCLAIM``, ``XAUTOCLAIM``, the consumer-deleting script of
``app/adapters/inspect.py``) and returns entries as Redis gives them (``(id, fields)``).
Which entries to take, and what to do with them, is the recovery loop's business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from redis.exceptions import RedisClusterException, ResponseError

from app.adapters import inspect
from app.adapters.faststream_workarounds import ensure_group
from app.adapters.redis_clients import RedisClient
from app.adapters.redis_errors import REDIS_UNREACHABLE, says_not_now
from app.domain.text import as_text
from app.runtime.state import wait_or_timeout

__all__ = ["HANDED_BACK_MARGIN_MS", "RedisClaims"]

log = structlog.get_logger("acp.groq_worker.recovery")

# An entry handed back looks this much older than CLAIM_IDLE_SECONDS to other consumers.
HANDED_BACK_MARGIN_MS = 1_000

Entry = tuple[Any, Any]
"""A stream entry as Redis returns it: its id and its fields (None when deleted)."""


class RedisClaims:
    """The pending-entry commands of consumer ``consumer`` in ``group`` of ``stream``."""

    def __init__(self, redis: RedisClient, stream: str, group: str, consumer: str) -> None:
        self._redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer

    async def until_available(
        self, step: Callable[[], Awaitable[Any]], stopping: Any, *, first_delay: float = 0.5
    ) -> None:
        """Run ``step`` until Redis lets it (waiting out an outage, recreating a vanished
        group) or ``stopping`` is set."""
        delay = first_delay
        while not stopping.is_set():
            try:
                await step()
                return
            except (*REDIS_UNREACHABLE, ResponseError, RedisClusterException) as exc:
                if says_not_now(exc):
                    log.warning("recovery_redis_unavailable", error=str(exc), retry_in=delay)
                elif str(exc).startswith("NOGROUP"):
                    await ensure_group(self._redis, self.stream, self.group)
                    log.warning("consumer_group_recreated", stream=self.stream, group=self.group)
                    return
                else:
                    raise
            await wait_or_timeout(stopping, delay)
            delay = min(delay * 2, 10.0)

    async def own_pending(self) -> list[Any]:
        """Every entry pending on this consumer's name, oldest first."""
        noted: list[Any] = []
        start = "-"
        while True:
            pending = await self._redis.xpending_range(
                self.stream, self.group, min=start, max="+", count=1000, consumername=self.consumer
            )
            if not pending:
                return noted
            noted.extend(item["message_id"] for item in pending)
            start = "(" + as_text(noted[-1])

    async def take(self, ids: list[Any]) -> list[Entry]:
        """Claim ``ids`` for this consumer whatever their idle time (a delivery counted)."""
        claimed: Any = await self._redis.xclaim(
            self.stream, self.group, self.consumer, min_idle_time=0, message_ids=ids
        )
        return list(claimed)

    async def refresh(self, *, idle_ms: int, limit: int, skip: set[str]) -> None:
        """Reset the idle time of this consumer's entries idle for ``idle_ms`` or more, but
        ``skip`` (XCLAIM JUSTID: no delivery counted), so no one claims them away."""
        pending = await self._redis.xpending_range(
            self.stream,
            self.group,
            min="-",
            max="+",
            count=limit,
            consumername=self.consumer,
            idle=idle_ms,
        )
        live: list[Any] = [
            item["message_id"] for item in pending if as_text(item["message_id"]) not in skip
        ]
        if live:
            await self._redis.xclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=idle_ms,
                message_ids=live,
                justid=True,
            )

    async def claim_idle(self, *, idle_ms: int, cursor: str, count: int) -> tuple[str, list[Entry]]:
        """XAUTOCLAIM from ``cursor``: entries idle for ``idle_ms`` on any consumer."""
        result = await self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=idle_ms,
            start_id=cursor,
            count=count,
        )
        return as_text(result[0]), list(result[1])

    async def deliveries(self, ids: Sequence[Any]) -> dict[str, int]:
        """How many times each of ``ids`` (pending on this consumer) was delivered."""
        pending = await self._redis.xpending_range(
            self.stream,
            self.group,
            min=as_text(ids[0]),
            max=as_text(ids[-1]),
            count=len(ids) + 100,
            consumername=self.consumer,
        )
        return {as_text(item["message_id"]): int(item["times_delivered"]) for item in pending}

    async def hand_back(self, *, idle_ms: int) -> tuple[int, bool]:
        """Make everything this consumer holds claimable by others now (its idle time set
        past ``idle_ms``, no delivery counted); leave the group when it holds nothing.
        Returns how many entries were handed back and whether the consumer left. Redis
        away or refusing stops it there: what is left goes idle on its own."""
        handed, left = 0, False
        start = "-"
        try:
            while True:
                pending = await self._redis.xpending_range(
                    self.stream,
                    self.group,
                    min=start,
                    max="+",
                    count=500,
                    consumername=self.consumer,
                )
                ids: list[Any] = [item["message_id"] for item in pending]
                if not ids:
                    break
                await self._redis.xclaim(
                    self.stream,
                    self.group,
                    self.consumer,
                    min_idle_time=0,
                    message_ids=ids,
                    idle=idle_ms + HANDED_BACK_MARGIN_MS,
                    justid=True,
                )
                handed += len(ids)
                start = "(" + as_text(ids[-1])
            verdict = await inspect.delete_consumer_if_idle(
                self._redis, self.stream, self.group, self.consumer, 0
            )
            left = verdict is inspect.DeleteVerdict.DELETED
        except (*REDIS_UNREACHABLE, ResponseError) as exc:
            log.warning("hand_back_failed", error=str(exc), handed_back=handed)
        return handed, left

    async def prune_departed(self, *, idle_ms: int) -> list[str]:
        """Delete the other consumers idle for ``idle_ms`` that hold nothing."""
        listed = await inspect.consumers(self._redis, self.stream, self.group)
        deleted = []
        for consumer in inspect.prune_candidates(listed, idle_ms):
            if consumer.name == self.consumer:
                continue
            verdict = await inspect.delete_consumer_if_idle(
                self._redis, self.stream, self.group, consumer.name, idle_ms
            )
            if verdict is inspect.DeleteVerdict.DELETED:
                deleted.append(consumer.name)
        return deleted
