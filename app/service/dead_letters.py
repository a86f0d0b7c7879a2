"""Dead letters: built from the entry as received, pushed with its acknowledgement, counted.

A letter holds the event once and is bounded in size (``app.domain.dead_letters``); the
store pushes it onto ``acp:groq:dlq`` and acknowledges its entry in one step, trimming the
list to ``DLQ_MAX_ENTRIES``. Each letter is counted by reason, the list's length kept in
``acp_groq_dlq_size``, and letters dropped to make room are counted and logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog

from app.domain.dead_letters import build_dead_letter
from app.domain.events import AuditEvent
from app.domain.insights import DeadLetter, DeadLetterReason
from app.domain.ports import DeadLettered, EntryRef, InsightStore, Received
from app.runtime.clock import utc_now
from app.runtime.metrics import Metrics
from app.service.store_steps import StoreSteps

__all__ = ["DeadLetters", "PutLetter"]

log = structlog.get_logger("acp.groq_worker.events")

PutLetter = Callable[[str], Awaitable[DeadLettered]]
"""Pushes a letter's JSON (and does what must go with it: the entry's acknowledgement)."""


class DeadLetters:
    """Makes and pushes the dead letters of one worker (``MAX_EVENT_BYTES``,
    ``DLQ_MAX_ENTRIES``)."""

    def __init__(
        self,
        store: InsightStore,
        steps: StoreSteps,
        metrics: Metrics,
        *,
        max_event_bytes: int,
        dlq_max_entries: int,
    ) -> None:
        self._store = store
        self._steps = steps
        self._metrics = metrics
        self._max_event_bytes = max_event_bytes
        self._dlq_max_entries = dlq_max_entries

    def letter(
        self,
        entry: EntryRef,
        received: Received,
        reason: DeadLetterReason,
        error: str,
        **known: Any,
    ) -> DeadLetter:
        """The letter of ``received``; ``known``: attempts, event and tenant ids, deliveries."""
        return build_dead_letter(
            entry_id=entry.entry_id,
            stream=entry.stream,
            fields=received.fields,
            payload=received.payload,
            payload_field=received.payload_field,
            reason=reason,
            error=error,
            failed_at=utc_now(),
            max_event_bytes=self._max_event_bytes,
            **known,
        )

    async def end(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        reason: DeadLetterReason,
        error: str,
        attempts: int = 0,
    ) -> None:
        """A valid event that cannot become an insight: its letter pushed, its entry acked."""
        known = {"event_id": event.event_id, "tenant_id": event.tenant_id}
        letter = self.letter(entry, received, reason, error, attempts=attempts, **known)
        await self.push(entry, letter)

    async def push(self, entry: EntryRef, letter: DeadLetter, put: PutLetter | None = None) -> None:
        """Push ``letter`` (by default through the store, which also acks ``entry``)."""
        letter_json = letter.model_dump_json()
        put = put or partial(self._store.dead_letter, entry)
        pushed = await self._steps.until_done("dead_letter", lambda: put(letter_json))
        self._metrics.dead_letters.labels(reason=letter.reason.value).inc()
        self._metrics.dlq_size.set(pushed.size)
        if pushed.dropped:
            self._metrics.dlq_dropped.inc(pushed.dropped)
            log.warning(
                "dead_letters_dropped",
                dropped=pushed.dropped,
                dlq_max_entries=self._dlq_max_entries,
                note="the DLQ is full: its oldest letters were dropped",
            )
