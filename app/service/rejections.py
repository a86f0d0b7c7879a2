"""What ends without an event's path: entries that are not events, and poison.

An entry that is not a valid event (``invalid``), and one delivered more than
``MAX_DELIVERIES`` times without an outcome (``max_deliveries``: an entry of the stream, or
a job of the scheduler its workers kept dying on) are dead-lettered, each with its entry's
end, and reported like any outcome.
"""

from __future__ import annotations

from app.domain.errors import InvalidEvent
from app.domain.insights import DeadLetterReason, Outcome
from app.domain.ports import EntryRef, Received
from app.domain.scheduling import Handed
from app.service.dead_letters import DeadLetters
from app.service.reports import Report, Reports

__all__ = ["Rejections"]


class Rejections:
    """Dead-letters what cannot be enriched before it is even admitted."""

    def __init__(
        self,
        letters: DeadLetters,
        reports: Reports,
        *,
        stream: str,
        group: str,
        max_deliveries: int,
    ) -> None:
        self._letters = letters
        self._reports = reports
        self._stream = stream
        self._group = group
        self._max_deliveries = max_deliveries

    async def reject(self, received: Received, error: InvalidEvent) -> Outcome:
        """Dead-letter an entry that is not a valid event (reason ``invalid``)."""
        started = self._reports.now()
        entry = EntryRef(self._stream, self._group, received.entry_id)
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

    async def give_up(
        self, received: Received, *, deliveries: int, entry: EntryRef | None = None
    ) -> Outcome:
        """Dead-letter an entry delivered more than MAX_DELIVERIES times (a poison entry)."""
        started = self._reports.now()
        entry = entry or EntryRef(self._stream, self._group, received.entry_id)
        error = (
            f"delivered {deliveries} times (MAX_DELIVERIES={self._max_deliveries}): "
            "it kept crashing or timing out its workers"
        )
        with self._reports.about(None, None, entry.entry_id):
            letter = self._letters.letter(
                entry, received, DeadLetterReason.MAX_DELIVERIES, error, deliveries=deliveries
            )
            await self._letters.push(entry, letter)
            report = Report(Outcome.DEAD_LETTERED, started, {"reason": "max_deliveries"})
            return self._reports.finish(report, deliveries=deliveries)

    async def give_up_job(self, handed: Handed) -> Outcome:
        """A job of the scheduler handed out MAX_DELIVERIES times without an outcome: its
        dead letter ends it."""
        job = handed.job
        entry = job.entry(self._stream, self._group)
        return await self.give_up(job.received(), deliveries=handed.deliveries, entry=entry)
