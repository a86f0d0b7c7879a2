"""What each event ends with: its outcome counted and one canonical log line.

Every event the worker takes ends in exactly one outcome of the contract (enriched,
duplicate, rate_limited, dead_lettered), counted in ``acp_groq_events_consumed_total``
and told in one ``event_processed`` line with what it took (model, attempts, tokens,
redactions, latency). The line carries the event's ids from the logging context while
the event is processed (``Reports.about``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.domain.insights import Outcome
from app.runtime.metrics import Labelled, Metrics

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

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._consumed = Labelled(metrics.events_consumed)
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    @contextmanager
    def about(self, event_id: str | None, tenant_id: str | None, entry_id: str) -> Iterator[None]:
        """Every line logged inside says which event it is about."""
        structlog.contextvars.bind_contextvars(
            event_id=event_id, tenant_id=tenant_id, entry_id=entry_id
        )
        try:
            yield
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "tenant_id", "entry_id")

    def finish(self, report: Report, **context: Any) -> Outcome:
        """Count the outcome and log the event's line (a warning for a dead letter)."""
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
        return report.outcome
