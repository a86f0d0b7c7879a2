"""What each event ends with: its outcome counted and one canonical log line.

Every event the worker takes ends in exactly one outcome of the contract (enriched,
duplicate, rate_limited, dead_lettered), counted in ``acp_groq_events_consumed_total``
and told in one ``event_processed`` line with what it took (model, attempts, tokens,
redactions, latency). The line carries the event's ids from the logging context while
the event is processed (``Reports.about``).

When the worker traces, the same facts go on the span current for the event (FastStream's
consume span): its ids and tenant while it is processed, its outcome at the end, a span
event for the admission's verdict and one for a dead letter with its reason. Untraced,
none of it runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry.util.types import AttributeValue

from app.domain.insights import Outcome
from app.runtime.metrics import Labelled, Metrics
from app.runtime.tracing import Tracing

__all__ = ["Report", "Reports"]

log = structlog.get_logger("acp.groq_worker.events")


@dataclass(slots=True)
class Report:
    """What the canonical log line of an event says: its outcome, when it was taken, and
    the facts of how it went."""

    outcome: Outcome
    started: float
    fields: dict[str, Any] = field(default_factory=dict)


class Reports:
    """Counts outcomes and writes the canonical line of each event."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing | None = None,
        span_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """``span_attributes``: what every event's span says of where it came from (the
        stream, group and consumer), when ``tracing``."""
        self._consumed = Labelled(metrics.events_consumed)
        self._clock = clock
        self._tracing = tracing
        self._span_attributes = dict(span_attributes or {})

    def now(self) -> float:
        return self._clock()

    @contextmanager
    def about(self, event_id: str | None, tenant_id: str | None, entry_id: str) -> Iterator[None]:
        """Every line logged inside says which event it is about."""
        structlog.contextvars.bind_contextvars(
            event_id=event_id, tenant_id=tenant_id, entry_id=entry_id
        )
        if self._tracing is not None:
            ids = {"messaging.message.id": entry_id, **self._span_attributes}
            if event_id is not None:
                ids["acp.event_id"] = event_id
            if tenant_id is not None:
                ids["acp.tenant_id"] = tenant_id
            self._tracing.annotate(ids)
        try:
            yield
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "tenant_id", "entry_id")

    def resumed(self, fields: Mapping[Any, Any]) -> contextlib.AbstractContextManager[None]:
        """An event taken up again later (a job of the scheduler): its own consume span,
        in the trace of its entry's ``traceparent`` field (a new trace without one)."""
        if self._tracing is None:
            return contextlib.nullcontext()
        stream = self._span_attributes.get("messaging.destination.name", "")
        attributes = {**self._span_attributes, "acp.scheduled": True}
        return self._tracing.resumed(fields, f"{stream} process", attributes)

    def admitted(self, verdict: str) -> None:
        """The admission's verdict on the event's span (admitted, duplicate, ...)."""
        if self._tracing is not None:
            self._tracing.event("admission", {"acp.admission": verdict})

    def finish(self, report: Report, **context: Any) -> Outcome:
        """Count the outcome and log the event's line (a warning for a dead letter)."""
        self._consumed(report.outcome.value).inc()
        if self._tracing is not None:
            self._traced(report)
        latency_ms = round((self._clock() - report.started) * 1000, 1)
        level = "warning" if report.outcome is Outcome.DEAD_LETTERED else "info"
        getattr(log, level)(
            "event_processed",
            outcome=report.outcome.value,
            latency_ms=latency_ms,
            **context,
            **report.fields,
        )
        return report.outcome

    def _traced(self, report: Report) -> None:
        assert self._tracing is not None
        outcome: dict[str, AttributeValue] = {"acp.outcome": report.outcome.value}
        reason = report.fields.get("reason")
        if report.outcome is Outcome.DEAD_LETTERED and isinstance(reason, str):
            outcome["acp.dead_letter.reason"] = reason
            letter: dict[str, AttributeValue] = {"acp.dead_letter.reason": reason}
            attempts = report.fields.get("attempts")
            if isinstance(attempts, int):
                letter["acp.attempts"] = attempts
            self._tracing.event("dead_letter", letter)
        self._tracing.annotate(outcome)
