"""Admission: whether an event goes on, and when.

One store step admits an event, charging its tenant once, or refuses it: a duplicate (its
insight exists), over its tenant's budget, or an id that belongs to another tenant. With
``EVENT_ORDER=priority`` the same step decides when: at once when this process has a free
model slot and nothing as urgent waits, otherwise the event becomes a job in the scheduler
(its entry acknowledged with it) and the ``Dispatcher`` is woken to hand it out. The
look-ahead's urgent events and events that must wait for capacity are admitted here too:
never charged twice.
"""

from __future__ import annotations

import time

from app.domain.events import AuditEvent
from app.domain.insights import DeadLetterReason, Outcome
from app.domain.ports import Admission, EntryRef, InsightStore, Received, ScheduleRequest
from app.domain.scheduling import TenantWeights, schedule_request
from app.runtime.metrics import Metrics
from app.service.dead_letters import DeadLetters
from app.service.dispatch import Dispatcher
from app.service.reports import Report, Reports
from app.service.store_steps import StoreSteps

__all__ = ["Admitter"]

_CONFLICT = "event_id already has an insight of another tenant; not overwritten"


class Admitter:
    """Admits events (``INSIGHT_BUDGET_PER_HOUR_PER_TENANT``) and ends those it refuses;
    with a dispatcher (EVENT_ORDER=priority), schedules those that must wait."""

    def __init__(
        self,
        store: InsightStore,
        steps: StoreSteps,
        letters: DeadLetters,
        metrics: Metrics,
        *,
        budget: int,
        dispatcher: Dispatcher | None = None,
        weights: TenantWeights | None = None,
        reports: Reports | None = None,
    ) -> None:
        """``reports``: each verdict told on the event's span, when the worker traces."""
        self._store = store
        self._reports = reports
        self._steps = steps
        self._letters = letters
        self._budget = budget
        self.dispatcher = dispatcher
        self._weights = weights or TenantWeights()
        self._rate_limited = metrics.rate_limited

    async def admit(
        self, event: AuditEvent, entry: EntryRef, received: Received, *, may_run: bool
    ) -> Admission:
        """The event just read: admitted to run now, scheduled (the dispatcher woken),
        refused, or already scheduled by the look-ahead (``AHEAD``)."""
        # With a free slot and nothing waiting a moment ago, the event will most likely
        # run now: its job is sent only if the store says it must wait after all.
        light = may_run and self.dispatcher is not None and self.dispatcher.nothing_waits
        schedule = self._schedule(event, received, may_run=may_run, with_job=not light)
        admission = await self._admit(event, entry, schedule)
        if admission is Admission.MUST_WAIT:  # events as urgent waited: it waits behind
            # them (asked to run now again, it could overtake one picked meanwhile)
            schedule = self._schedule(event, received, may_run=False)
            admission = await self._admit(event, entry, schedule)
        if admission is Admission.SCHEDULED:
            assert self.dispatcher is not None
            self.dispatcher.wake()
        return admission

    async def admit_unscheduled(self, event: AuditEvent, entry: EntryRef) -> Admission:
        """An event that must run here or not at all (it takes the batch lane)."""
        return await self._admit(event, entry, None)

    async def look_ahead(self, event: AuditEvent, entry: EntryRef, received: Received) -> bool:
        """An urgent event found before the group delivered it: scheduled now, or False
        when the store said no (left to its delivery)."""
        assert self.dispatcher is not None
        schedule = self._request(event, received, may_run=False, ahead=True)
        if await self._admit(event, entry, schedule) is not Admission.SCHEDULED:
            return False
        self.dispatcher.wake()
        return True

    async def wait_for_capacity(
        self, event: AuditEvent, entry: EntryRef, received: Received, retry_in: float
    ) -> Admission:
        """An event that ran at once and must wait for capacity: a job waiting
        ``retry_in`` seconds, its slot freed (admitted again: never charged twice).
        Anything but ``SCHEDULED`` is a refusal for ``refused``."""
        schedule = self._request(event, received, may_run=False, later=retry_in)
        admission = await self._admit(event, entry, schedule)
        if admission is Admission.SCHEDULED:
            assert self.dispatcher is not None
            self.dispatcher.due_in(retry_in)
        assert admission is not Admission.ADMITTED  # may_run=False: it runs later or not
        return admission

    async def refused(
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
            await self._letters.end(event, entry, received, DeadLetterReason.CONFLICT, _CONFLICT)
            return Report(Outcome.DEAD_LETTERED, started, {"reason": "conflict"})
        await self._steps.until_done("ack", lambda: self._store.ack(entry))
        if admission is Admission.RATE_LIMITED:
            self._rate_limited.labels(tenant_id=event.tenant_id).inc()
            return Report(Outcome.RATE_LIMITED, started)
        return Report(Outcome.DUPLICATE, started)

    def _schedule(
        self, event: AuditEvent, received: Received, *, may_run: bool, with_job: bool = True
    ) -> ScheduleRequest | None:
        if self.dispatcher is None:  # the stream's order: nothing is scheduled
            return None
        return self._request(event, received, may_run=may_run, with_job=with_job)

    def _request(
        self,
        event: AuditEvent,
        received: Received,
        *,
        may_run: bool,
        later: float | None = None,
        ahead: bool = False,
        with_job: bool = True,
    ) -> ScheduleRequest:
        cost = self._weights.cost(event.tenant_id)
        return schedule_request(
            event,
            received,
            cost=cost,
            may_run=may_run,
            now=time.time(),
            later=later,
            ahead=ahead,
            with_job=with_job,
        )

    async def _admit(
        self, event: AuditEvent, entry: EntryRef, schedule: ScheduleRequest | None
    ) -> Admission:
        admission = await self._steps.until_done(
            "admit",
            lambda: self._store.admit(
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                budget=self._budget,
                entry=entry,
                schedule=schedule,
            ),
        )
        if self._reports is not None:
            self._reports.admitted(admission.value)
        return admission
