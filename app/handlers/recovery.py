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

from app.adapters.redis_claims import RedisClaims
from app.domain.ports import Received
from app.domain.text import as_text
from app.runtime.state import WorkerState, wait_or_timeout
from app.service.rejections import Rejections
from app.settings import Settings

__all__ = ["PendingRecovery"]

log = structlog.get_logger("acp.groq_worker.recovery")

# How often a worker looks for consumers that left without a goodbye.
_PRUNE_EVERY_SECONDS = 60.0


class _Subscriber(Protocol):
    async def consume_one(self, msg: Any) -> None: ...


class PendingRecovery:
    """The claim loop of one worker process."""

    def __init__(
        self,
        claims: RedisClaims,
        settings: Settings,
        *,
        subscriber: _Subscriber,
        rejections: Rejections,
        state: WorkerState,
    ) -> None:
        self._claims = claims
        self._subscriber = subscriber
        self._rejections = rejections
        self._state = state
        self._stopping = state.stopping
        self._read_count = settings.read_count
        self._claim_count = settings.worker_concurrency
        self._max_deliveries = settings.max_deliveries
        self._idle_ms = int(settings.claim_idle_seconds * 1000)
        self._interval = max(0.2, min(settings.claim_idle_seconds / 3, 10.0))
        # read ahead + in flight, with room: the most entries pending on our name when healthy
        self._heartbeat_batch = 2 * (settings.read_count + settings.worker_concurrency) + 100
        self._prune_idle_ms = int(settings.consumer_prune_idle_seconds * 1000)
        self._cursor = "0-0"
        self._own_pending: list[Any] = []
        self._next_prune = 0.0

    async def prepare(self) -> None:
        """Before the subscriber reads anything: note what is pending on our own name.

        Taken before the first XREADGROUP, so an entry the subscriber reads after start
        is never mistaken for a left-over and processed twice.
        """

        async def note() -> None:
            self._own_pending = await self._claims.own_pending()

        await self._claims.until_available(note, self._stopping)

    async def run(self) -> None:
        """Recover own pending entries, then claim idle ones until stopped."""
        until = self._claims.until_available
        await until(self.recover_own, self._stopping)
        while not self._stopping.is_set():
            await until(self.heartbeat, self._stopping)
            await until(self.claim_idle, self._stopping)
            if self._prune_idle_ms and time.monotonic() >= self._next_prune:
                await until(self.prune_departed, self._stopping)
                self._next_prune = time.monotonic() + _PRUNE_EVERY_SECONDS
            await wait_or_timeout(self._stopping, self._interval)

    async def hand_back(self) -> int:
        """After a graceful stop: make what this consumer holds claimable by others now.

        Runs once the subscriber has stopped and in-flight events have finished (or been
        cut off by the shutdown timeout). Returns how many entries were handed back; the
        consumer leaves the group when it holds nothing. Redis being away leaves the
        entries to go idle on their own (claimed after CLAIM_IDLE_SECONDS, as before).
        """
        handed, left = await self._claims.hand_back(idle_ms=self._idle_ms)
        log.info(
            "consumer_leaving", consumer=self._claims.consumer, handed_back=handed, left_group=left
        )
        return handed

    async def prune_departed(self) -> list[str]:
        """Delete consumers idle for CONSUMER_PRUNE_IDLE_SECONDS that hold nothing."""
        deleted = await self._claims.prune_departed(idle_ms=self._prune_idle_ms)
        if deleted:
            log.info("departed_consumers_pruned", consumers=deleted, idle_ms=self._prune_idle_ms)
        return deleted

    # -- the three steps -------------------------------------------------------------

    async def recover_own(self) -> int:
        """Process the entries that were pending on this consumer's name at start."""
        recovered = 0
        while self._own_pending and not self._stopping.is_set():
            ids = self._own_pending[: self._read_count]
            claimed = await self._claims.take(ids)
            del self._own_pending[: self._read_count]
            await self._feed(claimed)
            recovered += len(ids)
        if recovered:
            log.info("own_pending_recovered", consumer=self._claims.consumer, entries=recovered)
        return recovered

    async def heartbeat(self) -> None:
        """Keep this consumer's live entries fresh, so no one claims them away.

        Live: every entry pending on our name that has not failed here, the ones being
        processed and the ones read ahead and waiting for a free slot alike. Entries idle
        for less than a heartbeat are left alone (nothing to refresh, and not stolen back
        if another consumer just claimed them).
        """
        await self._claims.refresh(
            idle_ms=int(self._interval * 1000),
            limit=self._heartbeat_batch,
            skip=self._state.failed,
        )

    async def claim_idle(self) -> int:
        """Claim entries idle longer than CLAIM_IDLE_SECONDS on any consumer; returns count."""
        self._cursor, claimed = await self._claims.claim_idle(
            idle_ms=self._idle_ms, cursor=self._cursor, count=self._claim_count
        )
        if claimed:
            log.info("idle_entries_claimed", entries=len(claimed), min_idle_ms=self._idle_ms)
            await self._feed(claimed)
        return len(claimed)

    # -- feeding the subscriber ------------------------------------------------------

    async def _feed(self, entries: Sequence[Any]) -> None:
        entries = [entry for entry in entries if entry and entry[1] is not None]
        if not entries:
            return
        deliveries = await self._claims.deliveries([entry[0] for entry in entries])
        for entry_id, fields in entries:
            entry_text = as_text(entry_id)
            times = deliveries.get(entry_text, 0)
            if times > self._max_deliveries:
                payload = fields.get(b"payload")
                entry = Received(entry_text, fields, payload, "payload" if payload else None)
                await self._rejections.give_up(entry, deliveries=times)
                continue
            await self._subscriber.consume_one(
                {
                    "type": "stream",
                    "channel": self._claims.stream,
                    "message_ids": [entry_id if isinstance(entry_id, bytes) else entry_id.encode()],
                    "data": fields,
                }
            )
