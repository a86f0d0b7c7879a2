"""One event's path, from a parsed stream entry to exactly one outcome.

``InsightService.process`` reads top to bottom as the event goes:

1. **admit** it (the store: a duplicate, another tenant's id, over its tenant's budget, or
   admitted and charged once);
2. **route** it to a model (``app.domain.routing``) and **prompt** it (``Prompter``:
   scrubbed; an event whose prompt cannot be scrubbed is never sent);
3. **defer** it to the batch lane (``BatchLane``) when it takes the lane, or
4. **answer** it (``ModelCaller``: breaker, retries, fallback) and **write** the insight
   (``InsightWriter``: one transaction with the entry's acknowledgement);
5. **report** it (``Reports``: the outcome counted and the canonical line).

What cannot be an insight becomes a dead letter (``DeadLetters``). Every Redis step waits
Redis out (``StoreSteps``): a result in hand is never thrown away.
"""

from __future__ import annotations

import structlog

from app.domain.dead_letters import llm_failure_reason
from app.domain.errors import InvalidEvent, LLMError, Postponed, ScrubFailed
from app.domain.events import AuditEvent
from app.domain.insights import DeadLetterReason, Outcome
from app.domain.ports import Admission, EntryRef, InsightStore, Received
from app.domain.routing import choose_model
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service.batch_lane import BatchLane
from app.service.dead_letters import DeadLetters
from app.service.model_calls import ModelCaller
from app.service.prompting import Prompter
from app.service.reports import Report, Reports
from app.service.store_steps import StoreSteps
from app.service.writing import InsightWriter
from app.settings import Settings

__all__ = ["InsightService"]

log = structlog.get_logger("acp.groq_worker.events")


class InsightService:
    """Turns one parsed stream entry into exactly one outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: InsightStore,
        steps: StoreSteps,
        prompter: Prompter,
        model: ModelCaller,
        writer: InsightWriter,
        letters: DeadLetters,
        reports: Reports,
        metrics: Metrics,
        state: WorkerState,
        lane: BatchLane | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._steps = steps
        self._prompter = prompter
        self._model = model
        self._writer = writer
        self._letters = letters
        self._reports = reports
        self._lane = lane
        self._in_flight = metrics.in_flight
        self._rate_limited = metrics.rate_limited
        self._state = state

    def entry(self, entry_id: str) -> EntryRef:
        """The inbound stream's entry ``entry_id``, as this worker's group reads it."""
        return EntryRef(self._settings.insight_stream, self._settings.insight_group, entry_id)

    # -- entry points ---------------------------------------------------------------

    async def process(self, event: AuditEvent, received: Received) -> Outcome | None:
        """Enrich a valid event, or end it as a duplicate, rate-limited or dead letter.

        ``received`` is the entry as received, what a dead letter keeps for replay.
        Returns None when the worker stopped before the event could start (still pending),
        or when the event went to the batch lane (acked; its outcome comes with its answer).
        """
        entry = self.entry(received.entry_id)
        self._in_flight.inc()
        self._state.failed.discard(entry.entry_id)
        try:
            with self._reports.about(event.event_id, event.tenant_id, entry.entry_id):
                report = await self._enrich(event, entry, received, self._reports.now())
                if report is None:  # waits in the batch lane; its outcome comes with it
                    return None
                return self._reports.finish(report, agent_id=event.agent_id)
        except Postponed:
            log.info("event_postponed", reason="worker stopping; the entry stays pending")
            return None
        except Exception:
            self._state.failed.add(entry.entry_id)
            raise
        finally:
            self._in_flight.dec()

    async def reject(self, received: Received, error: InvalidEvent) -> Outcome:
        """Dead-letter an entry that is not a valid event (reason ``invalid``)."""
        started = self._reports.now()
        entry = self.entry(received.entry_id)
        with self._reports.about(error.event_id, error.tenant_id, entry.entry_id):
            letter = self._letters.letter(
                entry,
                received,
                DeadLetterReason.INVALID,
                error.error,
                event_id=error.event_id,
                tenant_id=error.tenant_id,
            )
            await self._letters.push(entry, letter)
            report = Report(
                Outcome.DEAD_LETTERED, started, {"reason": "invalid", "error": letter.error}
            )
            return self._reports.finish(report)

    async def give_up(self, received: Received, *, deliveries: int) -> Outcome:
        """Dead-letter an entry delivered more than MAX_DELIVERIES times (a poison entry)."""
        started = self._reports.now()
        entry = self.entry(received.entry_id)
        error = (
            f"delivered {deliveries} times (MAX_DELIVERIES={self._settings.max_deliveries}): "
            "it kept crashing or timing out its workers"
        )
        with self._reports.about(None, None, entry.entry_id):
            letter = self._letters.letter(
                entry, received, DeadLetterReason.MAX_DELIVERIES, error, deliveries=deliveries
            )
            await self._letters.push(entry, letter)
            report = Report(Outcome.DEAD_LETTERED, started, {"reason": "max_deliveries"})
            return self._reports.finish(report, deliveries=deliveries)

    # -- the path of a valid event --------------------------------------------------

    async def _enrich(
        self, event: AuditEvent, entry: EntryRef, received: Received, started: float
    ) -> Report | None:
        admission = await self._admit(event, entry)
        if admission is not Admission.ADMITTED:
            return await self._refused(admission, event, entry, received, started)
        settings = self._settings
        model = choose_model(
            event.severity,
            deep_severities=settings.deep_severities,
            fast=settings.groq_model_fast,
            deep=settings.groq_model_deep,
        )
        try:
            prompt = self._prompter.prompt(event)
        except ScrubFailed as failure:
            return await self._unscrubbable(event, entry, received, started, failure)
        if self._lane is not None and self._lane.takes(event.severity):
            return await self._lane.defer(event, entry, received.fields, model, prompt, started)
        try:
            answer = await self._model.answer(model, prompt.system, prompt.user)
        except LLMError as exc:
            reason = llm_failure_reason(exc)
            await self._dead_letter(event, entry, received, reason, str(exc), exc.attempts)
            facts = {"model": model, "attempts": exc.attempts, "redactions": prompt.redaction_count}
            return Report(
                Outcome.DEAD_LETTERED,
                started,
                {"reason": reason.value, "error": str(exc), **facts},
            )
        await self._writer.write(
            event, entry, answer, started=started, redactions=prompt.redaction_count
        )
        return Report(
            Outcome.ENRICHED, started, {**answer.facts(), "redactions": prompt.redaction_count}
        )

    async def _admit(self, event: AuditEvent, entry: EntryRef) -> Admission:
        budget = self._settings.insight_budget_per_hour_per_tenant
        return await self._steps.until_done(
            "admit",
            lambda: self._store.admit(
                event_id=event.event_id, tenant_id=event.tenant_id, budget=budget, entry=entry
            ),
        )

    async def _refused(
        self,
        admission: Admission,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        started: float,
    ) -> Report:
        """A delivery the store did not admit: acked as a duplicate or over its budget, or
        dead-lettered when its id belongs to another tenant."""
        if admission is Admission.CONFLICT:
            error = "event_id already has an insight of another tenant; not overwritten"
            await self._dead_letter(event, entry, received, DeadLetterReason.CONFLICT, error, 0)
            return Report(Outcome.DEAD_LETTERED, started, {"reason": "conflict"})
        await self._steps.until_done("ack", lambda: self._store.ack(entry))
        if admission is Admission.RATE_LIMITED:
            self._rate_limited.labels(tenant_id=event.tenant_id).inc()
            return Report(Outcome.RATE_LIMITED, started)
        return Report(Outcome.DUPLICATE, started)

    async def _unscrubbable(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        started: float,
        failure: ScrubFailed,
    ) -> Report:
        """Scrubbing raised: the event is retried by redelivery (a fixed worker may take
        it), and dead-lettered ``scrub_failed`` on its MAX_DELIVERIES-th delivery."""
        deliveries = await self._steps.until_done(
            "deliveries", lambda: self._store.deliveries(entry)
        )
        log.error(
            "prompt_scrub_failed",
            error_type=failure.cause_type,
            deliveries=deliveries,
            note="the prompt was not sent",
        )
        if deliveries < self._settings.max_deliveries:
            raise failure  # the entry stays pending, to be claimed and tried again
        reason = DeadLetterReason.SCRUB_FAILED
        await self._dead_letter(event, entry, received, reason, str(failure), 0)
        return Report(
            Outcome.DEAD_LETTERED,
            started,
            {"reason": reason.value, "error": str(failure), "deliveries": deliveries},
        )

    async def _dead_letter(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        reason: DeadLetterReason,
        error: str,
        attempts: int,
    ) -> None:
        letter = self._letters.letter(
            entry,
            received,
            reason,
            error,
            attempts=attempts,
            event_id=event.event_id,
            tenant_id=event.tenant_id,
        )
        await self._letters.push(entry, letter)
