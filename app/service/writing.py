"""An answer made into the insight: sanitized, recorded, written and announced at once.

The model's answer is parsed and sanitized (``app.domain.sanitize``: credentials, personal
data and echoes of the event's raw fields removed, the text capped), made into the
``InsightRecord`` the Insight API reads, and written with its indexes, its
``InsightCreated`` message and the entry's acknowledgement in one store step
(``InsightStore.write_insight``: one MULTI/EXEC on a single Redis). The same path serves
both lanes, so a batch answer is written exactly like an online one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from app.domain.costs import Lane
from app.domain.events import AuditEvent
from app.domain.insight_stream import insight_created_fields
from app.domain.insights import InsightCreated, InsightRecord
from app.domain.keys import Keys
from app.domain.ports import EntryRef, InsightStore
from app.domain.prompt import parse_insight_answer
from app.domain.sanitize import echo_candidates, sanitize_insight
from app.runtime.clock import utc_now
from app.runtime.metrics import Labelled, Metrics
from app.runtime.tracing import Tracing
from app.service.model_calls import Answer
from app.service.spend import Spend
from app.service.store_steps import StoreSteps

__all__ = ["InsightWriter", "PublishCreated"]

PublishCreated = Callable[[Mapping[str, str], Any], Awaitable[Any]]
"""Announces an insight: the fields of its ``acp:groq:insights:stream`` entry
(``app/domain/insight_stream.py``), in the store's transaction (its pipeline, or None)."""


class InsightWriter:
    """Writes the insight of an answered event (``MAX_OUTPUT_CHARS``, ``PROMPT_REDACT_PII``)."""

    def __init__(
        self,
        store: InsightStore,
        steps: StoreSteps,
        *,
        publish_created: PublishCreated,
        spend: Spend,
        metrics: Metrics,
        max_output_chars: int,
        redact_pii: bool,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing | None = None,
    ) -> None:
        """``tracing``: the write is a span, whose context the InsightCreated entry
        carries, and the latency histogram gets the trace as an exemplar."""
        self._store = store
        self._tracing = tracing
        self._steps = steps
        self._publish_created = publish_created
        self._spend = spend
        self._latency = Labelled(metrics.event_latency)
        self._max_output_chars = max_output_chars
        self._redact_pii = redact_pii
        self._clock = clock

    async def write(
        self,
        event: AuditEvent,
        entry: EntryRef,
        answer: Answer,
        *,
        started: float,
        redactions: int,
        lane: Lane = Lane.ONLINE,
        release: Callable[[Any], None] | None = None,
    ) -> None:
        """Write ``answer`` as ``event``'s insight and acknowledge ``entry`` with it.

        ``release`` queues more commands in the insight's transaction (the batch lane
        drops the answered request there, so that it can never be answered twice).
        """
        completion = answer.completion
        record = InsightRecord(
            event_id=event.event_id,
            tenant_id=event.tenant_id,
            agent_id=event.agent_id,
            severity=event.severity,
            decision=event.decision,
            timestamp=event.epoch_seconds,
            model=answer.model,
            insight=sanitize_insight(
                parse_insight_answer(completion.text),
                echoes=echo_candidates(event),
                max_chars=self._max_output_chars,
                pii=self._redact_pii,
            ),
            created_at=utc_now(),
            latency_ms=round((self._clock() - started) * 1000),
            attempts=answer.attempts,
            fallback=answer.fallback,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cached_tokens=completion.cached_tokens,
            redactions=redactions,
            lane=lane,
        )
        created = InsightCreated.announcing(record)
        if self._tracing is None:
            await self._store_record(event, entry, record, created, {}, release)
            self._latency(answer.model).observe(self._clock() - started)
        else:
            with self._tracing.span(
                "write_insight", _write_attributes(created), kind=SpanKind.PRODUCER
            ):
                # The context is taken here, in the event's task: the store's group commit
                # queues the XADD from a task of its own.
                carrier = self._tracing.carrier()
                await self._store_record(event, entry, record, created, carrier, release)
            exemplar = self._tracing.exemplar()
            self._latency(answer.model).observe(self._clock() - started, exemplar)
        self._spend.count(event.tenant_id, answer.model, completion, lane)

    async def _store_record(
        self,
        event: AuditEvent,
        entry: EntryRef,
        record: InsightRecord,
        created: InsightCreated,
        trace: Mapping[str, str],
        release: Callable[[Any], None] | None,
    ) -> None:
        """The insight, its indexes, its InsightCreated entry and the ack: one store step."""
        fields = insight_created_fields(created, trace)
        record_json = record.model_dump_json()

        async def publish(pipe: Any) -> Any:
            result = await self._publish_created(fields, pipe)
            if release is not None:
                release(pipe)
            return result

        await self._steps.until_done(
            "write_insight",
            lambda: self._store.write_insight(
                entry,
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                agent_id=event.agent_id,
                score=event.epoch_seconds,
                record_json=record_json,
                publish=publish,
            ),
        )


def _write_attributes(created: InsightCreated) -> dict[str, AttributeValue]:
    """The write span's: the insight's key, and the InsightCreated message it sends."""
    return {
        "db.system.name": "redis",
        "acp.insight_key": created.insight_key,
        "messaging.system": "redis",
        "messaging.operation.type": "send",
        "messaging.destination.name": Keys.INSIGHTS_STREAM,
    }
