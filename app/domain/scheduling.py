"""Which waiting event reaches the model first: severity, then a fair share between tenants.

With ``EVENT_ORDER=priority`` (the default) an event that finds no free model slot, or finds
events of its severity or a higher one already waiting, waits in the scheduler (Redis,
shared by every process of the deployment) instead of in the stream. A free slot then
takes the next waiting event in this order:

1. **Severity first**: every waiting ``critical`` event before any ``high``, and so on.
2. **A fair share between tenants** within a severity: each tenant's waiting events form a
   queue (first in, first out: a tenant's order is kept), and the queues are served by
   virtual finish time (weighted fair queuing, equal-cost requests): a tenant's next event
   is tagged ``max(V, F_t) + 1 / w_t``, where ``V`` is the severity's virtual clock (the
   tag of the last event served), ``F_t`` the tenant's last tag and ``w_t`` its weight
   (``TENANT_WEIGHTS``, 1 by default). The smallest tag goes next. Tenants with work get
   calls in proportion to their weights, and a tenant that floods cannot delay another:
   a newcomer's first tag is one step after the event being served.

``EVENT_ORDER=fifo`` keeps the stream's order (no scheduler).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.domain.events import AuditEvent, Severity
from app.domain.ports import EntryRef, Received, ScheduleRequest
from app.domain.text import as_text

__all__ = [
    "SEVERITY_ORDER",
    "EventOrder",
    "Handed",
    "Job",
    "TenantWeights",
    "WaitingStats",
    "rank",
    "schedule_request",
]


class EventOrder(StrEnum):
    PRIORITY = "priority"  # severity first, then a fair share between tenants
    FIFO = "fifo"  # the stream's order


# The severities, most urgent first: a severity's rank is its index.
SEVERITY_ORDER: tuple[Severity, ...] = (
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
)
_RANK = {severity: index for index, severity in enumerate(SEVERITY_ORDER)}


def rank(severity: Severity) -> int:
    """0 for ``critical`` (served first) to 3 for ``low``."""
    return _RANK[severity]


class TenantWeights:
    """Each tenant's share of model calls within a severity (``TENANT_WEIGHTS``)."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._weights = dict(weights or {})

    def cost(self, tenant_id: str) -> float:
        """How far one event moves the tenant's virtual time: ``1 / weight``."""
        return 1.0 / self._weights.get(tenant_id, 1.0)


class Job(BaseModel):
    """An event waiting in the scheduler: what its processing and its dead letter need.

    Its stream entry was acknowledged when it was scheduled (in the same script), so the
    job carries the event as received: ``payload`` from the entry's ``payload_field``, and
    the entry's other ``fields``.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    tenant_id: str
    severity: Severity
    entry_id: str = Field(description="The inbound entry the event came in.")
    payload: str = Field(description="The event JSON as received.")
    payload_field: str | None = "payload"
    fields: dict[str, str] = Field(default_factory=dict, description="The entry's other fields.")
    scheduled_at: float = Field(description="When it was scheduled, epoch seconds.")
    cost: float = Field(1.0, description="Its tenant's 1 / weight when it was scheduled.")

    def entry(self, stream: str, group: str) -> EntryRef:
        """Where its event came from; its end removes the job."""
        return EntryRef(stream, group, self.entry_id, self.event_id)

    def received(self) -> Received:
        """Its entry as received (what a dead letter keeps)."""
        return Received(self.entry_id, self.fields, self.payload, self.payload_field)


@dataclass(frozen=True, slots=True)
class Handed:
    """A job handed to a slot, and how many times it has been (this time included)."""

    job: Job
    deliveries: int


@dataclass(frozen=True, slots=True)
class WaitingStats:
    """What waits in the scheduler: by severity, how many and since when (epoch s); how
    many run, how many wait to be retried later; the tenants with the most waiting."""

    waiting: dict[str, int]
    oldest: dict[str, float | None]
    running: int
    later: int
    top_tenants: list[tuple[str, int]]


def schedule_request(
    event: AuditEvent,
    received: Received,
    *,
    cost: float,
    may_run: bool,
    now: float,
    later: float | None = None,
    ahead: bool = False,
    with_job: bool = True,
) -> ScheduleRequest:
    """What the admission needs to schedule ``event``, its job made of the entry as
    received (the payload once, the entry's other fields); ``later``: seconds it waits
    before it is queued (an admitted event that must wait); ``ahead``: the look-ahead
    schedules it before the group delivers its entry; ``with_job=False``: the job is
    left out (an event expected to run now: ``Admission.MUST_WAIT`` asks for it)."""
    if not with_job:
        return ScheduleRequest(
            may_run=may_run,
            severity=event.severity.value,
            rank=rank(event.severity),
            cost=cost,
            job_json="",
        )
    payload = as_text(received.payload) if received.payload else event.model_dump_json()
    job = Job(
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        severity=event.severity,
        entry_id=received.entry_id,
        payload=payload,
        payload_field=received.payload_field,
        fields={
            as_text(key): as_text(value)
            for key, value in received.fields.items()
            if as_text(key) != received.payload_field
        },
        scheduled_at=now,
        cost=cost,
    )
    return ScheduleRequest(
        may_run=may_run,
        severity=event.severity.value,
        rank=rank(event.severity),
        cost=cost,
        job_json=job.model_dump_json(),
        later_ms=None if later is None else int((now + later) * 1000),
        ahead=ahead,
    )
