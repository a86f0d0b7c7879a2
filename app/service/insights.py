"""One event's path, from a parsed stream entry to exactly one outcome.

``InsightService.process`` reads top to bottom as the event goes:

1. **admit** it (``Admitter``: a duplicate, another tenant's id, over its tenant's budget,
   or admitted and charged once);
2. **route** it to a model (``app.domain.routing``) and **prompt** it (``Prompter``:
   scrubbed; an event whose prompt cannot be scrubbed is never sent);
3. **defer** it to the batch lane (``BatchLane``) when it takes the lane, or
4. **answer** it (``ModelCaller``: breaker, retries, fallback) and **write** the insight
   (``InsightWriter``: one transaction with the entry's acknowledgement);
5. **report** it (``Reports``: the outcome counted and the canonical line).

With ``EVENT_ORDER=priority`` the admission (1) also decides when: the event goes on at
once if this process has a free model slot for it and nothing as urgent waits; otherwise
it waits in the scheduler, and ``process_job`` takes it from step 2 when the
``Dispatcher`` hands it to a free slot, most urgent first, tenants served in turn.

What cannot be an insight becomes a dead letter (``DeadLetters``; entries that are not events
and poison ones: ``Rejections``). Every Redis step waits
Redis out (``StoreSteps``): a result in hand is never thrown away.
"""

from __future__ import annotations

import time

import structlog

from app.domain.dead_letters import llm_failure_reason
from app.domain.errors import LLMError, Postponed, ScrubFailed, WaitForCapacity
from app.domain.events import AuditEvent
from app.domain.insights import DeadLetterReason, Outcome
from app.domain.ports import Admission, EntryRef, InsightStore, Received
from app.domain.routing import choose_model
from app.domain.scheduling import Handed
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service.admission import Admitter
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

# How long an event that finds every slot taken, with nothing waiting in the scheduler,
# waits for one before it is scheduled: about the time a slot takes to come back when
# the worker, not the model, is the bottleneck (scheduling would cost it ~10% of its
# throughput), and far less than a model call takes when slots are scarce.
_SLOT_WAIT_SECONDS = 0.005


class InsightService:
    """Turns one parsed stream entry into exactly one outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: InsightStore,
        steps: StoreSteps,
        admitter: Admitter,
        prompter: Prompter,
        model: ModelCaller,
        writer: InsightWriter,
        letters: DeadLetters,
        reports: Reports,
        metrics: Metrics,
        state: WorkerState,
        lane: BatchLane | None = None,
    ) -> None:
        """The admitter's dispatcher, if any, is EVENT_ORDER=priority (None: the stream's
        order)."""
        self._settings = settings
        self._store = store
        self._steps = steps
        self._admitter = admitter
        self._dispatcher = admitter.dispatcher
        self._prompter = prompter
        self._model = model
        self._writer = writer
        self._letters = letters
        self._reports = reports
        self._lane = lane
        self._in_flight = metrics.in_flight
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
        slots = self._dispatcher.slots if self._dispatcher is not None else None
        slot = slots is not None and slots.try_take()
        if slots is not None and not slot and self._dispatcher and self._dispatcher.nothing_waits:
            # Nothing waits: a slot is given back soon more often than not, and an event
            # that runs inline costs less than one scheduled. Only a backlog schedules.
            slot = await slots.take_within(_SLOT_WAIT_SECONDS)
        self._in_flight.inc()
        self._state.failed.discard(entry.entry_id)
        try:
            with self._reports.about(event.event_id, event.tenant_id, entry.entry_id):
                report = await self._enrich(event, entry, received, self._reports.now(), slot)
                if report is None:  # waits in the batch lane or the scheduler
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
            if slot and slots is not None:
                slots.give_back()

    async def process_job(self, handed: Handed) -> Outcome:
        """An event the scheduler handed to a free slot: on from its prompt (it was
        admitted and charged when it was scheduled). ``Postponed`` when the worker began
        stopping before its model call (the dispatcher gives it back)."""
        job = handed.job
        waited = max(0.0, time.time() - job.scheduled_at)
        started = self._reports.now() - waited
        event = AuditEvent.model_validate_json(job.payload)
        entry = job.entry(self._settings.insight_stream, self._settings.insight_group)
        received = job.received()
        self._in_flight.inc()
        try:
            with (
                self._reports.resumed(received.fields),
                self._reports.about(event.event_id, event.tenant_id, entry.entry_id),
            ):
                report = await self._answer(
                    event, entry, received, started, deliveries=handed.deliveries
                )
                assert report is not None  # a job never takes the batch lane
                report.fields["waited_ms"] = round(waited * 1000, 1)
                return self._reports.finish(report, agent_id=event.agent_id)
        finally:
            self._in_flight.dec()

    async def look_ahead(self, event: AuditEvent, received: Received) -> bool:
        """An urgent event the look-ahead found before the group delivered it: schedule
        it now (admitted and charged once; its delivery will be acknowledged without an
        outcome). False when the store said no (left to its delivery)."""
        entry = self.entry(received.entry_id)
        with self._reports.about(event.event_id, event.tenant_id, entry.entry_id):
            return await self._admitter.look_ahead(event, entry, received)

    # -- the path of a valid event --------------------------------------------------

    async def _enrich(
        self, event: AuditEvent, entry: EntryRef, received: Received, started: float, slot: bool
    ) -> Report | None:
        lane = self._lane is not None and self._lane.takes(event.severity)
        if lane:
            admission = await self._admitter.admit_unscheduled(event, entry)
        else:
            admission = await self._admitter.admit(event, entry, received, may_run=slot)
        if admission is Admission.SCHEDULED:
            return None
        if admission is Admission.AHEAD:  # its job (the look-ahead's) has the outcome
            await self._steps.until_done("ack", lambda: self._store.ack(entry))
            log.debug("event_looked_ahead", note="scheduled before its delivery; acked")
            return None
        if admission is not Admission.ADMITTED:
            return await self._admitter.refused(admission, event, entry, received, started)
        return await self._answer(event, entry, received, started, lane=lane)

    async def _answer(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        started: float,
        *,
        lane: bool = False,
        deliveries: int | None = None,
    ) -> Report | None:
        """From an admitted event to its report: route, prompt, then defer it to the batch
        lane or answer it and write its insight."""
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
            return await self._unscrubbable(event, entry, received, started, failure, deliveries)
        if lane and self._lane is not None:
            return await self._lane.defer(event, entry, received.fields, model, prompt, started)
        try:
            answer = await self._model.answer(
                model,
                prompt.system,
                prompt.user,
                severity=event.severity,
                wait_in_place=self._dispatcher is None,  # with a scheduler, it waits there
            )
        except WaitForCapacity as wait:
            if entry.job:
                raise  # the dispatcher hands the job back to the scheduler, to wait
            admission = await self._admitter.wait_for_capacity(
                event, entry, received, wait.retry_in
            )
            if admission is Admission.SCHEDULED:
                return None
            return await self._admitter.refused(admission, event, entry, received, started)
        except LLMError as exc:
            reason = llm_failure_reason(exc)
            await self._letters.end(event, entry, received, reason, str(exc), exc.attempts)
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

    async def _unscrubbable(
        self,
        event: AuditEvent,
        entry: EntryRef,
        received: Received,
        started: float,
        failure: ScrubFailed,
        deliveries: int | None,
    ) -> Report:
        """Scrubbing raised: the event is retried by redelivery (a fixed worker may take
        it), and dead-lettered ``scrub_failed`` on its MAX_DELIVERIES-th delivery."""
        if deliveries is None:  # an entry of the stream: its count is in the group's list
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
        await self._letters.end(event, entry, received, reason, str(failure))
        return Report(
            Outcome.DEAD_LETTERED,
            started,
            {"reason": reason.value, "error": str(failure), "deliveries": deliveries},
        )
