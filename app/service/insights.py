"""What the worker does with one event: its outcome, its writes, its dead letter.

``InsightService`` is the application layer between the handler (which hands it parsed
entries) and the ports (``InsightStore``, and the model through ``ModelCaller``). Every
event ends in exactly one outcome of the contract: enriched, duplicate, rate_limited or
dead_lettered, counted in ``acp_groq_events_consumed_total{result}`` and told in one
canonical log line. A Redis step is retried until Redis answers: a result in hand (an
answer the model was paid for) is never thrown away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from app.domain.batch import LaneRequest
from app.domain.costs import Lane, answer_cost
from app.domain.dead_letters import build_dead_letter
from app.domain.errors import (
    InvalidEvent,
    LLMError,
    Postponed,
    ScrubFailed,
    StoreUnavailable,
)
from app.domain.events import AuditEvent
from app.domain.insights import (
    DeadLetter,
    DeadLetterReason,
    InsightCreated,
    InsightRecord,
    Outcome,
)
from app.domain.ports import Admission, Completion, DeadLettered, EntryRef, InsightStore, Received
from app.domain.prompt import InsightPrompt, build_insight_prompt, parse_insight_answer
from app.domain.routing import choose_model
from app.domain.sanitize import echo_candidates, sanitize_insight
from app.domain.text import as_text
from app.runtime.metrics import Labelled, Metrics
from app.runtime.state import WorkerState
from app.service.batch_lane import BatchLane
from app.service.model_calls import Answer, ModelCaller
from app.settings import Settings

__all__ = ["InsightService", "PublishCreated", "decode_fields", "utc_now"]

PublishCreated = Callable[[InsightCreated, Any], Awaitable[Any]]

log = structlog.get_logger("acp.groq_worker.events")

T = TypeVar("T")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry's fields as text, for dead letters (undecodable bytes escaped)."""

    return {as_text(key): as_text(value) for key, value in fields.items()}


@dataclass(slots=True)
class _Report:
    """What the canonical log line of an event says."""

    outcome: Outcome
    started: float
    fields: dict[str, Any] = field(default_factory=dict)


def _llm_reason(exc: LLMError) -> DeadLetterReason:
    """Why a model that did not answer ends in the DLQ: transient errors until the attempts
    ran out, or a permanent refusal."""
    return DeadLetterReason.LLM_EXHAUSTED if exc.transient else DeadLetterReason.LLM_PERMANENT


def _answer_fields(answer: Answer, lane: Lane) -> dict[str, Any]:
    completion = answer.completion
    return {
        "model": answer.model,
        "attempts": answer.attempts,
        "lane": lane.value,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "cached_tokens": completion.cached_tokens,
    }


def _received_from_lane(request: LaneRequest) -> Received:
    """The entry of a request of the batch lane, as its dead letter keeps it."""
    if "payload" in request.fields:
        return Received(request.entry_id, request.fields, request.fields["payload"], "payload")
    # A FastStream message: the event, as validated, stands for its envelope's body.
    return Received(request.entry_id, request.fields, request.event_json, "__data__")


class InsightService:
    """Turns one parsed stream entry into exactly one outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: ModelCaller,
        store: InsightStore,
        metrics: Metrics,
        publish_created: PublishCreated,
        state: WorkerState,
        lane: BatchLane | None = None,
        build_prompt: Callable[[AuditEvent], InsightPrompt] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._lane = lane
        self._build_prompt = build_prompt or partial(
            build_insight_prompt,
            redact_pii=settings.prompt_redact_pii,
            max_chars=settings.max_prompt_chars,
        )
        self._wall_clock = wall_clock
        self._model = model
        self._state = state
        self._store = store
        self._metrics = metrics
        self._consumed = Labelled(metrics.events_consumed)
        self._event_latency = Labelled(metrics.event_latency)
        self._tokens = Labelled(metrics.llm_tokens)
        self._lane_tokens = Labelled(metrics.lane_tokens)
        self._cost = Labelled(metrics.estimated_cost)
        self._publish_created = publish_created
        self._sleep = sleep
        self._clock = clock

    # -- entry points ---------------------------------------------------------------

    def entry(self, entry_id: str) -> EntryRef:
        """The inbound stream's entry ``entry_id``, as this worker's group reads it."""
        return EntryRef(self._settings.insight_stream, self._settings.insight_group, entry_id)

    async def process(self, event: AuditEvent, received: Received) -> Outcome | None:
        """Enrich a valid event, or end it as a duplicate, rate-limited or dead letter.

        ``received`` is the entry as received, what a dead letter keeps for replay.
        Returns None when the worker stopped before the event could start (still pending),
        or when the event went to the batch lane (acked; its outcome comes with its answer).
        """
        started = self._clock()
        entry = self.entry(received.entry_id)
        self._metrics.in_flight.inc()
        self._state.failed.discard(entry.entry_id)
        structlog.contextvars.bind_contextvars(
            event_id=event.event_id, tenant_id=event.tenant_id, entry_id=entry.entry_id
        )
        try:
            report = await self._process(event, entry, received, started)
            if report is None:  # waits in the batch lane; its outcome comes with its answer
                return None
            self._finish(report, agent_id=event.agent_id)
            return report.outcome
        except Postponed:
            log.info("event_postponed", reason="worker stopping; the entry stays pending")
            return None
        except Exception:
            self._state.failed.add(entry.entry_id)
            raise
        finally:
            self._metrics.in_flight.dec()
            structlog.contextvars.unbind_contextvars("event_id", "tenant_id", "entry_id")

    async def give_up(self, received: Received, *, deliveries: int) -> Outcome:
        """Dead-letter an entry delivered more than MAX_DELIVERIES times (a poison entry)."""
        started = self._clock()
        entry = self.entry(received.entry_id)
        error = (
            f"delivered {deliveries} times (MAX_DELIVERIES={self._settings.max_deliveries}): "
            "it kept crashing or timing out its workers"
        )
        letter = self._letter_of(
            entry, received, DeadLetterReason.MAX_DELIVERIES, error, deliveries=deliveries
        )
        await self._dead_letter(entry, letter)
        self._finish(
            _Report(Outcome.DEAD_LETTERED, started, {"reason": "max_deliveries"}),
            entry_id=entry.entry_id,
            deliveries=deliveries,
        )
        return Outcome.DEAD_LETTERED

    async def reject(self, received: Received, error: InvalidEvent) -> Outcome:
        """Dead-letter an entry that is not a valid event (reason ``invalid``)."""
        started = self._clock()
        entry = self.entry(received.entry_id)
        letter = self._letter_of(
            entry,
            received,
            DeadLetterReason.INVALID,
            error.error,
            event_id=error.event_id,
            tenant_id=error.tenant_id,
        )
        await self._dead_letter(entry, letter)
        self._finish(
            _Report(Outcome.DEAD_LETTERED, started, {"reason": "invalid", "error": letter.error}),
            event_id=error.event_id,
            tenant_id=error.tenant_id,
            entry_id=entry.entry_id,
        )
        return Outcome.DEAD_LETTERED

    # -- the steps of one event -----------------------------------------------------

    async def _process(
        self, event: AuditEvent, entry: EntryRef, received: Received, started: float
    ) -> _Report | None:
        admission = await self._until_done(
            "admit",
            lambda: self._store.admit(
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                budget=self._settings.insight_budget_per_hour_per_tenant,
                entry=entry,
            ),
        )
        if admission is Admission.DUPLICATE:
            await self._until_done("ack", lambda: self._store.ack(entry))
            return _Report(Outcome.DUPLICATE, started)
        if admission is Admission.RATE_LIMITED:
            await self._until_done("ack", lambda: self._store.ack(entry))
            self._metrics.rate_limited.labels(tenant_id=event.tenant_id).inc()
            return _Report(Outcome.RATE_LIMITED, started)
        if admission is Admission.CONFLICT:
            error = "event_id already has an insight of another tenant; not overwritten"
            letter = self._letter(event, entry, received, DeadLetterReason.CONFLICT, error, 0)
            await self._dead_letter(entry, letter)
            return _Report(Outcome.DEAD_LETTERED, started, {"reason": "conflict"})

        model = choose_model(
            event.severity,
            deep_severities=self._settings.deep_severities,
            fast=self._settings.groq_model_fast,
            deep=self._settings.groq_model_deep,
        )
        failure: ScrubFailed | None = None
        try:
            prompt = self._prompt(event)
        except Exception as exc:  # whatever it was, the prompt is not sent: fail closed
            failure = ScrubFailed(exc)  # its type only: the text may quote the event
        if failure is not None:
            return await self._unscrubbable(event, entry, received, started, failure)
        if self._lane is not None and self._lane.takes(event.severity):
            return await self._defer(event, entry, received.fields, model, prompt, started)
        try:
            answer = await self._model.answer(model, prompt.system, prompt.user)
        except LLMError as exc:
            reason = _llm_reason(exc)
            letter = self._letter(event, entry, received, reason, str(exc), exc.attempts)
            await self._dead_letter(entry, letter)
            return _Report(
                Outcome.DEAD_LETTERED,
                started,
                {
                    "reason": reason.value,
                    "error": str(exc),
                    "model": model,
                    "attempts": exc.attempts,
                    "redactions": prompt.redaction_count,
                },
            )

        await self._write(event, entry, answer, started, prompt.redaction_count)
        completion = answer.completion
        return _Report(
            Outcome.ENRICHED,
            started,
            {
                "model": answer.model,
                "attempts": answer.attempts,
                "fallback": answer.fallback,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "cached_tokens": completion.cached_tokens,
                "redactions": prompt.redaction_count,
            },
        )

    # -- the batch lane --------------------------------------------------------------

    async def _defer(
        self,
        event: AuditEvent,
        entry: EntryRef,
        fields: Mapping[Any, Any],
        model: str,
        prompt: InsightPrompt,
        started: float,
    ) -> _Report | None:
        """Keep the prepared request in the batch lane and ack the entry, in one step."""
        assert self._lane is not None
        store = self._lane.store
        request = LaneRequest(
            event_id=event.event_id,
            tenant_id=event.tenant_id,
            entry_id=entry.entry_id,
            stream=entry.stream,
            group=entry.group,
            recorded_at=self._wall_clock(),
            model=model,
            system=prompt.system,
            user=prompt.user,
            max_completion_tokens=self._settings.groq_max_completion_tokens,
            reasoning_effort=self._settings.groq_reasoning_effort,
            event_json=event.model_dump_json(),
            fields=decode_fields(fields),
            redactions=prompt.redaction_count,
        )
        request_json = request.model_dump_json()
        kept = await self._until_done(
            "lane_record",
            lambda: store.record(
                entry, event_id=event.event_id, request_json=request_json, at=request.recorded_at
            ),
        )
        if not kept:  # another copy of the event already waits there (the entry is acked)
            return _Report(Outcome.DUPLICATE, started, {"lane": "batch"})
        log.info(
            "event_deferred",
            lane="batch",
            model=model,
            redactions=prompt.redaction_count,
            latency_ms=round((self._clock() - started) * 1000, 1),
        )
        return None

    async def complete_deferred(
        self, request: LaneRequest, answer: Completion | str | None
    ) -> Outcome:
        """End an event of the batch lane: write the batch's answer, or (``answer`` is why
        there is none, or None) ask the model online as any event, dead-lettering it with
        ``llm_permanent``/``llm_exhausted`` when the usual attempts fail."""
        assert self._lane is not None
        store = self._lane.store
        waited = max(0.0, self._wall_clock() - request.recorded_at)
        started = self._clock() - waited
        event = AuditEvent.model_validate_json(request.event_json)
        entry = EntryRef(request.stream, request.group, request.entry_id)
        structlog.contextvars.bind_contextvars(
            event_id=event.event_id, tenant_id=event.tenant_id, entry_id=entry.entry_id
        )

        def release(pipe: Any) -> None:
            store.release_in(pipe, event.event_id)

        try:
            if isinstance(answer, Completion):
                batch = Answer(answer, answer.model or request.model, 1, fallback=False)
                await self._write(
                    event, entry, batch, started, request.redactions, Lane.BATCH, release
                )
                report = _Report(Outcome.ENRICHED, started, _answer_fields(batch, Lane.BATCH))
            else:
                report = await self._answer_online(request, event, entry, started, answer, release)
            self._finish(report, agent_id=event.agent_id)
            return report.outcome
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "tenant_id", "entry_id")

    async def _answer_online(
        self,
        request: LaneRequest,
        event: AuditEvent,
        entry: EntryRef,
        started: float,
        batch_error: str | None,
        release: Callable[[Any], None],
    ) -> _Report:
        assert self._lane is not None
        store = self._lane.store
        why = batch_error or "the batch did not answer it"
        try:
            answer = await self._model.answer(request.model, request.system, request.user)
        except LLMError as exc:
            reason = _llm_reason(exc)
            error = f"batch lane: {why}; online: {exc}"
            received = _received_from_lane(request)
            letter = self._letter(event, entry, received, reason, error, exc.attempts)
            # Through the lane's store: the letter and the request's removal in one step.
            await self._dead_letter(
                entry, letter, partial(store.dead_letter, entry, event_id=event.event_id)
            )
            return _Report(
                Outcome.DEAD_LETTERED,
                started,
                {"reason": reason.value, "error": error, "lane": "batch"},
            )
        await self._write(event, entry, answer, started, request.redactions, Lane.ONLINE, release)
        fields = _answer_fields(answer, Lane.ONLINE)
        fields["batch_error"] = why
        return _Report(Outcome.ENRICHED, started, fields)

    def _prompt(self, event: AuditEvent) -> InsightPrompt:
        """The event's prompt, scrubbed and capped; what was masked is counted, never logged."""
        prompt = self._build_prompt(event)
        for kind, count in prompt.redactions.items():
            self._metrics.prompt_redactions.labels(kind=kind).inc(count)
        return prompt

    async def _unscrubbable(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        started: float,
        failure: ScrubFailed,
    ) -> _Report:
        """Scrubbing raised: the event is retried by redelivery (a fixed worker may take
        it), and dead-lettered ``scrub_failed`` on its MAX_DELIVERIES-th delivery."""
        self._metrics.scrub_failures.inc()
        deliveries = await self._until_done("deliveries", lambda: self._store.deliveries(entry))
        log.error(
            "prompt_scrub_failed",
            error_type=failure.cause_type,
            deliveries=deliveries,
            note="the prompt was not sent",
        )
        if deliveries < self._settings.max_deliveries:
            raise failure  # the entry stays pending, to be claimed and tried again
        letter = self._letter(
            event, entry, received, DeadLetterReason.SCRUB_FAILED, str(failure), 0
        )
        await self._dead_letter(entry, letter)
        return _Report(
            Outcome.DEAD_LETTERED,
            started,
            {"reason": "scrub_failed", "error": str(failure), "deliveries": deliveries},
        )

    async def _write(
        self,
        event: AuditEvent,
        entry: EntryRef,
        answer: Answer,
        started: float,
        redactions: int,
        lane: Lane = Lane.ONLINE,
        release: Callable[[Any], None] | None = None,
    ) -> None:
        """Write the insight (the same keys, sanitizer and message for both lanes).

        ``release`` queues more commands in the insight's transaction (the batch lane
        drops the answered request there, so that it can never be answered twice).
        """
        completion = answer.completion
        insight = sanitize_insight(
            parse_insight_answer(completion.text),
            echoes=echo_candidates(event),
            max_chars=self._settings.max_output_chars,
            pii=self._settings.prompt_redact_pii,
        )
        created_at = utc_now()
        latency = self._clock() - started
        record = InsightRecord(
            event_id=event.event_id,
            tenant_id=event.tenant_id,
            agent_id=event.agent_id,
            severity=event.severity,
            decision=event.decision,
            timestamp=event.epoch_seconds,
            model=answer.model,
            insight=insight,
            created_at=created_at,
            latency_ms=round(latency * 1000),
            attempts=answer.attempts,
            fallback=answer.fallback,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cached_tokens=completion.cached_tokens,
            redactions=redactions,
            lane=lane,
        )
        created = InsightCreated.announcing(record)
        record_json = record.model_dump_json()

        async def publish(pipe: Any) -> Any:
            result = await self._publish_created(created, pipe)
            if release is not None:
                release(pipe)
            return result

        await self._until_done(
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
        self._event_latency(answer.model).observe(self._clock() - started)
        self._count_spend(event.tenant_id, answer.model, completion, lane)

    def _count_spend(self, tenant_id: str, model: str, completion: Completion, lane: Lane) -> None:
        """Tokens by kind (cached: the prompt prefix the provider had cached) and the cost."""
        for kind, tokens in (
            ("prompt", completion.prompt_tokens),
            ("completion", completion.completion_tokens),
            ("cached", completion.cached_tokens),
        ):
            if tokens:
                self._tokens(tenant_id, model, kind).inc(tokens)
                self._lane_tokens(lane.value, kind).inc(tokens)
        cost = answer_cost(
            self._settings.groq_price_table,
            model,
            prompt_tokens=completion.prompt_tokens,
            cached_tokens=completion.cached_tokens,
            completion_tokens=completion.completion_tokens,
            lane=lane,
        )
        if cost:
            self._cost(tenant_id, lane.value).inc(cost)

    # -- dead letters and Redis retries ---------------------------------------------

    def _letter(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        reason: DeadLetterReason,
        error: str,
        attempts: int,
    ) -> DeadLetter:
        """The dead letter of a valid event (the model failed it, or its id is another's)."""
        return self._letter_of(
            entry,
            received,
            reason,
            error,
            attempts=attempts,
            event_id=event.event_id,
            tenant_id=event.tenant_id,
        )

    def _letter_of(
        self,
        entry: EntryRef,
        received: Received,
        reason: DeadLetterReason,
        error: str,
        **known: Any,
    ) -> DeadLetter:
        return build_dead_letter(
            entry_id=entry.entry_id,
            stream=entry.stream,
            fields=received.fields,
            payload=received.payload,
            payload_field=received.payload_field,
            reason=reason,
            error=error,
            failed_at=utc_now(),
            max_event_bytes=self._settings.max_event_bytes,
            **known,
        )

    async def _dead_letter(
        self,
        entry: EntryRef,
        letter: DeadLetter,
        put: Callable[[str], Awaitable[DeadLettered]] | None = None,
    ) -> None:
        """Put ``letter`` in the DLQ (with ``put``, given the letter's JSON; by default the
        store's, which also acks the entry) and count it, and the old letters it dropped."""
        letter_json = letter.model_dump_json()
        put = put or partial(self._store.dead_letter, entry)
        pushed = await self._until_done("dead_letter", lambda: put(letter_json))
        self._metrics.dead_letters.labels(reason=letter.reason.value).inc()
        self._metrics.dlq_size.set(pushed.size)
        if pushed.dropped:
            self._metrics.dlq_dropped.inc(pushed.dropped)
            log.warning(
                "dead_letters_dropped",
                dropped=pushed.dropped,
                dlq_max_entries=self._settings.dlq_max_entries,
                note="the DLQ is full: its oldest letters were dropped",
            )

    async def _until_done(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis step until Redis answers: a result in hand is never thrown away.

        Retries only ``StoreUnavailable`` (Redis out of reach, or refusing for now: OOM,
        READONLY, LOADING...), with capped exponential backoff, for as long as it takes,
        holding the event's slot (so the subscriber stops reading while every slot
        waits); shutdown cancels the wait and the entry stays pending for the next
        delivery. While Redis refuses, readiness says why.
        """
        delay = 0.05
        while True:
            try:
                result = await call()
            except StoreUnavailable as exc:
                self._metrics.redis_errors.labels(operation=operation).inc()
                self._metrics.redis_refusals.labels(reason=exc.reason).inc()
                self._state.redis_refusal = exc.reason
                log.warning(
                    "redis_unavailable", operation=operation, error=str(exc), retry_in=delay
                )
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._state.redis_refusal is not None:
                log.info("redis_accepting_again", operation=operation)
                self._state.redis_refusal = None
            return result

    def _finish(self, report: _Report, **context: Any) -> None:
        self._consumed(report.outcome.value).inc()
        latency_ms = round((self._clock() - report.started) * 1000, 1)
        level = "warning" if report.outcome is Outcome.DEAD_LETTERED else "info"
        getattr(log, level)(
            "event_processed",
            outcome=report.outcome.value,
            latency_ms=latency_ms,
            **context,
            **report.fields,
        )
