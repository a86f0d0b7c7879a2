"""Where pending entries re-enter: this process's own after a restart, and dead consumers'.

FastStream reads only new entries (``>``): an entry left pending by a crash, a kill or a
handler that raised would stay pending forever. ``PendingRecovery`` runs beside the
subscriber and feeds such entries into the same subscriber (same parser, validation,
concurrency limit and ack path):

* at start, the entries still pending on this consumer's own name (a restart under the
  same ``WORKER_ID``);
* every few seconds, entries pending on any consumer for longer than
  ``CLAIM_IDLE_SECONDS`` (XAUTOCLAIM), while the subscriber keeps reading new ones;
* the entries this process holds (being processed, or read ahead and waiting for a slot)
  are kept fresh (XCLAIM ... JUSTID resets their idle time without counting a delivery), so
  a slow model call or a full worker never has its entries claimed away; an entry whose
  processing raised is left to go idle, to be retried by a claim;
* an entry delivered more than ``MAX_DELIVERIES`` times is dead-lettered
  (``max_deliveries``) instead of circling forever;
* at a graceful stop, what this consumer still holds (read ahead and never started, or
  cut off by the shutdown timeout) is handed back: its idle time is set past
  ``CLAIM_IDLE_SECONDS`` (XCLAIM ... IDLE JUSTID, no delivery counted), so the next claim
  pass of any other worker takes it at once instead of a minute later; a consumer that
  holds nothing then leaves the group;
* consumers of processes that died without a goodbye (kill -9, OOM, a lost node) and
  hold nothing are removed once idle for ``CONSUMER_PRUNE_IDLE_SECONDS``, by whichever
  worker notices first (re-checked and deleted in one script, like ``groq-worker
  consumers prune``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisClusterException, ResponseError

from app.adapters import inspect
from app.adapters.faststream_workarounds import ensure_group
from app.adapters.redis_clients import RedisClient
from app.adapters.redis_errors import REDIS_UNREACHABLE, says_not_now
from app.adapters.redis_replies import as_text
from app.domain.ports import Received
from app.runtime.state import WorkerState, wait_or_timeout
from app.service.insights import InsightService
from app.settings import Settings

__all__ = ["PendingRecovery"]

log = structlog.get_logger("acp.groq_worker.recovery")

# An entry handed back looks this much older than CLAIM_IDLE_SECONDS to other consumers.
_HANDED_BACK_MARGIN_MS = 1_000
# How often a worker looks for consumers that left without a goodbye.
_PRUNE_EVERY_SECONDS = 60.0


class _Subscriber(Protocol):
    async def consume_one(self, msg: Any) -> None: ...


class PendingRecovery:
    """The claim loop of one worker process."""

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        *,
        subscriber: _Subscriber,
        service: InsightService,
        state: WorkerState,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._subscriber = subscriber
        self._service = service
        self._stream = settings.insight_stream
        self._group = settings.insight_group
        self._me = settings.worker_id
        self._idle_ms = int(settings.claim_idle_seconds * 1000)
        self._interval = max(0.2, min(settings.claim_idle_seconds / 3, 10.0))
        self._cursor = "0-0"
        # read ahead + in flight, with room: the most entries pending on our name when healthy
        self._heartbeat_batch = 2 * (settings.read_count + settings.worker_concurrency) + 100
        self._state = state
        self._stopping = state.stopping
        self._own_pending: list[Any] = []
        self._prune_idle_ms = int(settings.consumer_prune_idle_seconds * 1000)
        self._next_prune = 0.0

    async def prepare(self) -> None:
        """Before the subscriber reads anything: note what is pending on our own name.

        Taken before the first XREADGROUP, so an entry the subscriber reads after start
        is never mistaken for a left-over and processed twice.
        """
        await self._until_redis(self._note_own_pending)

    async def run(self) -> None:
        """Recover own pending entries, then claim idle ones until stopped."""
        await self._until_redis(self.recover_own)
        while not self._stopping.is_set():
            await self._until_redis(self.heartbeat)
            await self._until_redis(self.claim_idle)
            if self._prune_idle_ms and time.monotonic() >= self._next_prune:
                await self._until_redis(self.prune_departed)
                self._next_prune = time.monotonic() + _PRUNE_EVERY_SECONDS
            await wait_or_timeout(self._stopping, self._interval)

    async def hand_back(self) -> int:
        """After a graceful stop: make what this consumer holds claimable by others now.

        Runs once the subscriber has stopped and in-flight events have finished (or been
        cut off by the shutdown timeout). Returns how many entries were handed back; the
        consumer leaves the group when it holds nothing. Redis being away leaves the
        entries to go idle on their own (claimed after CLAIM_IDLE_SECONDS, as before).
        """
        handed = 0
        start = "-"
        try:
            while True:
                pending = await self._redis.xpending_range(
                    self._stream,
                    self._group,
                    min=start,
                    max="+",
                    count=500,
                    consumername=self._me,
                )
                ids: list[Any] = [item["message_id"] for item in pending]
                if not ids:
                    break
                # IDLE past the claim threshold; JUSTID counts no delivery.
                await self._redis.xclaim(
                    self._stream,
                    self._group,
                    self._me,
                    min_idle_time=0,
                    message_ids=ids,
                    idle=self._idle_ms + _HANDED_BACK_MARGIN_MS,
                    justid=True,
                )
                handed += len(ids)
                start = "(" + as_text(ids[-1])
            left = await inspect.delete_consumer_if_idle(
                self._redis, self._stream, self._group, self._me, 0
            )
        except (*REDIS_UNREACHABLE, ResponseError) as exc:
            log.warning("hand_back_failed", error=str(exc), handed_back=handed)
            return handed
        log.info(
            "consumer_leaving",
            consumer=self._me,
            handed_back=handed,
            left_group=left is inspect.DeleteVerdict.DELETED,
        )
        return handed

    async def prune_departed(self) -> list[str]:
        """Delete consumers idle for CONSUMER_PRUNE_IDLE_SECONDS that hold nothing."""
        listed = await inspect.consumers(self._redis, self._stream, self._group)
        deleted = []
        for consumer in inspect.prune_candidates(listed, self._prune_idle_ms):
            if consumer.name == self._me:
                continue
            verdict = await inspect.delete_consumer_if_idle(
                self._redis, self._stream, self._group, consumer.name, self._prune_idle_ms
            )
            if verdict is inspect.DeleteVerdict.DELETED:
                deleted.append(consumer.name)
        if deleted:
            log.info("departed_consumers_pruned", consumers=deleted, idle_ms=self._prune_idle_ms)
        return deleted

    async def _until_redis(self, step: Any) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await step()
                return
            except (*REDIS_UNREACHABLE, ResponseError, RedisClusterException) as exc:
                if says_not_now(exc):
                    log.warning("recovery_redis_unavailable", error=str(exc), retry_in=delay)
                elif str(exc).startswith("NOGROUP"):
                    await ensure_group(self._redis, self._stream, self._group)
                    log.warning("consumer_group_recreated", stream=self._stream, group=self._group)
                    return
                else:
                    raise
            await wait_or_timeout(self._stopping, delay)
            delay = min(delay * 2, 10.0)

    # -- the three steps -------------------------------------------------------------

    async def _note_own_pending(self) -> None:
        noted: list[Any] = []
        start = "-"
        while True:
            pending = await self._redis.xpending_range(
                self._stream, self._group, min=start, max="+", count=1000, consumername=self._me
            )
            if not pending:
                break
            noted.extend(item["message_id"] for item in pending)
            start = "(" + as_text(noted[-1])
        self._own_pending = noted

    async def recover_own(self) -> int:
        """Process the entries that were pending on this consumer's name at start."""
        batch = self._settings.read_count
        recovered = 0
        while self._own_pending and not self._stopping.is_set():
            ids = self._own_pending[:batch]
            claimed = await self._redis.xclaim(
                self._stream, self._group, self._me, min_idle_time=0, message_ids=ids
            )
            del self._own_pending[:batch]
            await self._feed(claimed)
            recovered += len(ids)
        if recovered:
            log.info("own_pending_recovered", consumer=self._me, entries=recovered)
        return recovered

    async def heartbeat(self) -> None:
        """Keep this consumer's live entries fresh, so no one claims them away.

        Live: every entry pending on our name that has not failed here, the ones being
        processed and the ones read ahead and waiting for a free slot alike. XCLAIM with
        JUSTID resets their idle time without counting a delivery; entries idle for less
        than a heartbeat are left alone (nothing to refresh, and not stolen back if another
        consumer just claimed them).
        """
        min_idle_ms = int(self._interval * 1000)
        pending = await self._redis.xpending_range(
            self._stream,
            self._group,
            min="-",
            max="+",
            count=self._heartbeat_batch,
            consumername=self._me,
            idle=min_idle_ms,
        )
        failed = self._state.failed
        ids: list[Any] = [item["message_id"] for item in pending]
        live: list[Any] = [entry_id for entry_id in ids if as_text(entry_id) not in failed]
        if live:
            await self._redis.xclaim(
                self._stream,
                self._group,
                self._me,
                min_idle_time=min_idle_ms,
                message_ids=live,
                justid=True,
            )

    async def claim_idle(self) -> int:
        """Claim entries idle longer than CLAIM_IDLE_SECONDS on any consumer; returns count."""
        result = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self._me,
            min_idle_time=self._idle_ms,
            start_id=self._cursor,
            count=self._settings.worker_concurrency,
        )
        next_cursor, claimed = result[0], result[1]
        self._cursor = as_text(next_cursor)
        if claimed:
            log.info("idle_entries_claimed", entries=len(claimed), min_idle_ms=self._idle_ms)
            await self._feed(claimed)
        return len(claimed)

    # -- feeding the subscriber ------------------------------------------------------

    async def _deliveries(self, ids: Sequence[bytes | str]) -> dict[str, int]:
        pending = await self._redis.xpending_range(
            self._stream,
            self._group,
            min=as_text(ids[0]),
            max=as_text(ids[-1]),
            count=len(ids) + 100,
            consumername=self._me,
        )
        return {as_text(item["message_id"]): int(item["times_delivered"]) for item in pending}

    async def _feed(self, entries: Sequence[Any]) -> None:
        entries = [entry for entry in entries if entry and entry[1] is not None]
        if not entries:
            return
        deliveries = await self._deliveries([entry[0] for entry in entries])
        limit = self._settings.max_deliveries
        for entry_id, fields in entries:
            entry_text = as_text(entry_id)
            times = deliveries.get(entry_text, 0)
            if times > limit:
                payload = fields.get(b"payload")
                entry = Received(entry_text, fields, payload, "payload" if payload else None)
                await self._service.give_up(entry, deliveries=times)
                continue
            await self._subscriber.consume_one(
                {
                    "type": "stream",
                    "channel": self._stream,
                    "message_ids": [entry_id if isinstance(entry_id, bytes) else entry_id.encode()],
                    "data": fields,
                }
            )
