"""The batch lane's online half: which events take it, keeping them there, ending them.

An event of the lane (``GROQ_BATCH_SEVERITIES``) is admitted and prompted like any other;
then ``defer`` keeps its prepared request in the lane's store and acknowledges its entry in
one step (nothing acknowledged without its request kept, nothing kept twice). Its outcome
comes later, from ``complete``: the batch's answer written like an online one, or, when the
batch has none for it, the model asked online as for any event (dead-lettered
``llm_permanent``/``llm_exhausted`` when that fails too). ``LaneRunner``
(``app.service.lane_runner``) submits the waiting requests and follows the batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import structlog

from app.domain.batch import LanePolicy, LaneRequest
from app.domain.costs import Lane
from app.domain.dead_letters import llm_failure_reason
from app.domain.errors import LLMError
from app.domain.events import AuditEvent, Severity
from app.domain.insights import Outcome
from app.domain.ports import Completion, EntryRef, LaneStore, Received
from app.domain.prompt import InsightPrompt
from app.domain.text import as_text
from app.service.dead_letters import DeadLetters
from app.service.model_calls import Answer, ModelCaller
from app.service.reports import Report, Reports
from app.service.store_steps import StoreSteps
from app.service.writing import InsightWriter

__all__ = ["BatchLane"]

log = structlog.get_logger("acp.groq_worker.events")


class BatchLane:
    """Defers the events of the lane and ends them when their batch is collected.

    ``lag`` is the group's lag as the runner last sampled it (the policy's
    ``GROQ_BATCH_WHEN_LAG_ABOVE`` decision).
    """

    def __init__(
        self,
        policy: LanePolicy,
        store: LaneStore,
        *,
        model: ModelCaller,
        writer: InsightWriter,
        letters: DeadLetters,
        reports: Reports,
        steps: StoreSteps,
        max_completion_tokens: int,
        reasoning_effort: str | None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.store = store
        self.lag: int | None = None
        self._model = model
        self._writer = writer
        self._letters = letters
        self._reports = reports
        self._steps = steps
        self._max_completion_tokens = max_completion_tokens
        self._reasoning_effort = reasoning_effort
        self._wall_clock = wall_clock

    def takes(self, severity: Severity) -> bool:
        return self.policy.takes(severity, self.lag)

    async def defer(
        self,
        event: AuditEvent,
        entry: EntryRef,
        fields: Mapping[Any, Any],
        model: str,
        prompt: InsightPrompt,
        started: float,
    ) -> Report | None:
        """Keep the prepared request in the lane and ack the entry, in one step. None: it
        waits there (its outcome comes with its answer); a duplicate when a copy of the
        event already waits."""
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
            max_completion_tokens=self._max_completion_tokens,
            reasoning_effort=self._reasoning_effort,
            event_json=event.model_dump_json(),
            fields={as_text(key): as_text(value) for key, value in fields.items()},
            redactions=prompt.redaction_count,
        )
        request_json = request.model_dump_json()
        kept = await self._steps.until_done(
            "lane_record",
            lambda: self.store.record(
                entry, event_id=event.event_id, request_json=request_json, at=request.recorded_at
            ),
        )
        if not kept:  # another copy of the event already waits there (the entry is acked)
            return Report(Outcome.DUPLICATE, started, {"lane": "batch"})
        log.info(
            "event_deferred",
            lane="batch",
            model=model,
            redactions=prompt.redaction_count,
            latency_ms=round((self._reports.now() - started) * 1000, 1),
        )
        return None

    async def complete(self, request: LaneRequest, answer: Completion | str | None) -> Outcome:
        """End an event of the lane: write the batch's answer, or (``answer`` is why there
        is none, or None) ask the model online as for any event."""
        waited = max(0.0, self._wall_clock() - request.recorded_at)
        started = self._reports.now() - waited
        event = AuditEvent.model_validate_json(request.event_json)
        entry = EntryRef(request.stream, request.group, request.entry_id)
        release = partial(self.store.release_in, event_id=event.event_id)
        with self._reports.about(event.event_id, event.tenant_id, entry.entry_id):
            if isinstance(answer, Completion):
                batch = Answer(answer, answer.model or request.model, 1, fallback=False)
                await self._writer.write(
                    event,
                    entry,
                    batch,
                    started=started,
                    redactions=request.redactions,
                    lane=Lane.BATCH,
                    release=release,
                )
                report = Report(Outcome.ENRICHED, started, {**batch.facts(), "lane": "batch"})
            else:
                report = await self._online(request, event, entry, started, answer, release)
            return self._reports.finish(report, agent_id=event.agent_id)

    async def _online(
        self,
        request: LaneRequest,
        event: AuditEvent,
        entry: EntryRef,
        started: float,
        batch_error: str | None,
        release: Callable[[Any], None],
    ) -> Report:
        why = batch_error or "the batch did not answer it"
        try:
            answer = await self._model.answer(request.model, request.system, request.user)
        except LLMError as exc:
            reason = llm_failure_reason(exc)
            error = f"batch lane: {why}; online: {exc}"
            letter = self._letters.letter(
                entry,
                _received(request),
                reason,
                error,
                attempts=exc.attempts,
                event_id=event.event_id,
                tenant_id=event.tenant_id,
            )
            # Through the lane's store: the letter and the request's removal in one step.
            put = partial(self.store.dead_letter, entry, event_id=event.event_id)
            await self._letters.push(entry, letter, put)
            return Report(
                Outcome.DEAD_LETTERED,
                started,
                {"reason": reason.value, "error": error, "lane": "batch"},
            )
        await self._writer.write(
            event,
            entry,
            answer,
            started=started,
            redactions=request.redactions,
            release=release,
        )
        return Report(
            Outcome.ENRICHED, started, {**answer.facts(), "lane": "online", "batch_error": why}
        )


def _received(request: LaneRequest) -> Received:
    """The entry of a request of the lane, as its dead letter keeps it."""
    if "payload" in request.fields:
        return Received(request.entry_id, request.fields, request.fields["payload"], "payload")
    # A FastStream message: the event, as validated, stands for its envelope's body.
    return Received(request.entry_id, request.fields, request.event_json, "__data__")
