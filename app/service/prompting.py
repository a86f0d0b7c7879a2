"""The prompt of an event, scrubbed, counted, and never sent when scrubbing fails.

The prompt is built from the allow-listed fields and scrubbed (``app.domain.prompt``); what
was masked is counted by kind (``acp_groq_prompt_redactions_total``), never logged. If
building or scrubbing raises, for any reason, ``ScrubFailed`` says so and no prompt exists
to be sent: the caller leaves the event to be delivered again.
"""

from __future__ import annotations

from collections.abc import Callable

from app.domain.errors import ScrubFailed
from app.domain.events import AuditEvent
from app.domain.prompt import InsightPrompt
from app.runtime.metrics import Labelled, Metrics

__all__ = ["BuildPrompt", "Prompter"]

BuildPrompt = Callable[[AuditEvent], InsightPrompt]
"""The event's prompt, scrubbed and capped (``build_insight_prompt`` with the settings)."""


class Prompter:
    """Builds the prompt of each event, failing closed."""

    def __init__(self, build: BuildPrompt, metrics: Metrics) -> None:
        self._build = build
        self._redactions = Labelled(metrics.prompt_redactions)
        self._failures = metrics.scrub_failures

    def prompt(self, event: AuditEvent) -> InsightPrompt:
        """The prompt to send; ``ScrubFailed`` (its cause's type only) when there is none."""
        failure: ScrubFailed | None = None
        try:
            prompt = self._build(event)
        except Exception as exc:  # whatever it was, nothing unscrubbed leaves: fail closed
            failure = ScrubFailed(exc)  # made here, raised below: no chained cause to print
        if failure is not None:
            self._failures.inc()
            raise failure
        for kind, count in prompt.redactions.items():
            self._redactions(kind).inc(count)
        return prompt
