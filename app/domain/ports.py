"""The ports the worker needs from the outside world, as protocols and plain data.

``LLM`` is a chat-completions model; ``InsightStore`` is where admission, insights, dead
letters and acknowledgements go (Redis in production, a fake in tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from app.domain.routing import ServiceTier
    from app.domain.scheduling import Handed, WaitingStats

__all__ = [
    "LLM",
    "Admission",
    "BatchAPI",
    "BatchStatus",
    "Completion",
    "CompletionRequest",
    "DeadLettered",
    "EntryRef",
    "InsightStore",
    "LaneStore",
    "Publish",
    "Received",
    "ScheduleRequest",
    "Scheduler",
    "StreamAhead",
]


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One chat-completion call: the model, the two prompt messages and output limits."""

    model: str
    system: str
    user: str
    max_completion_tokens: int
    json_schema: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    priority: int = 0  # the event's severity rank (0: critical), for whoever queues calls
    service_tier: ServiceTier | None = None  # Groq's service_tier (None: none sent)


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's answer: its text and what it cost."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens the provider served from its prompt cache (billed at a discount)."""
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LLM(Protocol):
    """A chat-completions model. Raises ``TransientLLMError`` or ``PermanentLLMError``.

    An adapter makes exactly one attempt per call: retries belong to the caller.
    """

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


class Admission(StrEnum):
    ADMITTED = "admitted"  # charged; this delivery goes on to the model now
    SCHEDULED = "scheduled"  # charged, and waits in the scheduler (its entry acked)
    AHEAD = "ahead"  # the look-ahead scheduled it before its delivery: ack, no outcome
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    # Asked without its job (it expected to run now) and events as urgent wait: ask again
    # with the job, to wait behind them. Charged already; the second asking is not.
    MUST_WAIT = "must_wait"


@dataclass(frozen=True, slots=True)
class EntryRef:
    """Where an event came from, so that its end (the XACK, or the end of its job in the
    scheduler) can join the writes of its outcome.

    ``job`` is set for an event handed out by the scheduler: its entry was acknowledged
    when it was scheduled, and its end removes the job (the event id) instead.
    """

    stream: str
    group: str
    entry_id: str
    job: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """EVENT_ORDER=priority: what the admission needs to decide whether the event runs now
    or waits in the scheduler, and to schedule it."""

    may_run: bool  # a model slot of this process is free for it
    severity: str
    rank: int  # 0 for critical ... 3 for low
    cost: float  # 1 / its tenant's weight
    job_json: str  # the Job, as the scheduler keeps it ("": not sent, see MUST_WAIT)
    later_ms: int | None = None  # wait until then (epoch ms) before queueing: a retry later
    ahead: bool = False  # the look-ahead's: its entry is not delivered yet (see Lookahead)


@dataclass(frozen=True, slots=True)
class Received:
    """One inbound entry as it was received: its id, its fields, and the event's bytes read
    from the field ``payload_field`` (``payload``, or a FastStream message's ``__data__``).
    What a dead letter keeps of it."""

    entry_id: str
    fields: Mapping[Any, Any]
    payload: bytes | str | None = None
    payload_field: str | None = None


class DeadLettered(NamedTuple):
    """A letter pushed onto the DLQ: its length now, and how many of the oldest letters
    the push dropped to keep it within DLQ_MAX_ENTRIES."""

    size: int
    dropped: int = 0


# Publishes InsightCreated in the store's transaction (its pipeline, or None without one).
Publish = Callable[[Any], Awaitable[Any]]


class InsightStore(Protocol):
    """What the service needs from the insight store (a fake implements it for tests)."""

    async def admit(
        self,
        *,
        event_id: str,
        tenant_id: str,
        budget: int,
        entry: EntryRef | None = None,
        schedule: ScheduleRequest | None = None,
    ) -> Admission:
        """The verdict on one delivery; with ``schedule``, an admitted event that cannot
        run now is scheduled (``SCHEDULED``: charged, its entry acked, in one step)."""
        ...

    async def write_insight(
        self,
        entry: EntryRef,
        *,
        event_id: str,
        tenant_id: str,
        agent_id: str,
        score: float,
        record_json: str,
        publish: Publish,
    ) -> None: ...

    async def dead_letter(self, entry: EntryRef, letter_json: str) -> DeadLettered:
        """Push the letter onto the DLQ (capped) and acknowledge its entry, together."""
        ...

    async def ack(self, entry: EntryRef) -> None: ...

    async def deliveries(self, entry: EntryRef) -> int:
        """How many times the entry was delivered (1 when it is not pending)."""
        ...


# -- the scheduler (EVENT_ORDER=priority) ------------------------------------------------


class StreamAhead(Protocol):
    """The inbound stream ahead of the group's position (Redis in production), for the
    look-ahead: chunks of entries not yet delivered, each handed to one process."""

    async def lag(self) -> int | None:
        """Entries not yet delivered to the group (None: unknown)."""
        ...

    async def next_chunk(self, count: int) -> list[tuple[str, Mapping[bytes, bytes]]]:
        """Up to ``count`` entries past the group's position and past every chunk handed
        out before (by any process): (entry id, fields)."""
        ...


class Scheduler(Protocol):
    """Where events wait for a free model slot, in the order of ``app.domain.scheduling``
    (Redis in production). Events are scheduled by ``InsightStore.admit``; a job ends in
    the transaction of its outcome (``EntryRef.job``)."""

    async def pick(self, wanted: int) -> list[Handed]:
        """Up to ``wanted`` waiting jobs, most urgent first, each now running under a lease."""
        ...

    async def refresh(self, event_ids: Sequence[str]) -> None:
        """Mark these running jobs alive."""
        ...

    async def reap(self, *, max_deliveries: int, limit: int = 500) -> list[Handed]:
        """Requeue jobs not marked alive for long (their worker died) or whose retry is due;
        the poison ones back."""
        ...

    async def later(self, event_id: str, delay_seconds: float) -> bool:
        """A running job waits ``delay_seconds`` before it is handed out again."""
        ...

    async def reclaim_own(self) -> int:
        """At start: the jobs still running under this consumer's name go back at once."""
        ...

    async def stats(self, *, top: int = 5) -> WaitingStats:
        """What waits, by severity, and the tenants with the most waiting."""
        ...


# -- the batch lane ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What the provider says of one batch."""

    batch_id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    local_id: str | None = None  # the lane's id, from the batch's metadata
    completed: int = 0
    failed: int = 0
    total: int = 0


class BatchAPI(Protocol):
    """A provider's Batch API (Groq's: files with purpose "batch", then a batch of them).

    Raises ``TransientLLMError``/``PermanentLLMError`` like an ``LLM``.
    """

    def line(self, custom_id: str, request: CompletionRequest) -> bytes:
        """One request as a line of the input file (JSON and a newline)."""
        ...

    async def submit(self, local_id: str, content: bytes) -> str:
        """Upload the file and create the batch (``local_id`` in its metadata); its id."""
        ...

    async def find(self, local_id: str) -> BatchStatus | None:
        """The batch created with ``local_id``, if the provider has one (reconciling a
        submission a killed worker may or may not have made)."""
        ...

    async def retrieve(self, batch_id: str) -> BatchStatus: ...

    async def results(self, status: BatchStatus) -> Mapping[str, Completion | str]:
        """A finished batch's answers by ``custom_id``: the completion, or why there is
        none (a failed line). A request missing from both was not answered."""
        ...

    async def cancel(self, batch_id: str) -> BatchStatus: ...

    async def aclose(self) -> None: ...


class LaneStore(Protocol):
    """Where the batch lane keeps its requests and batches (Redis in production).

    ``token`` is the lane lock's holder: steps that move requests between waiting and a
    batch do nothing for a worker that no longer holds the lock.
    """

    async def record(self, entry: EntryRef, *, event_id: str, request_json: str, at: float) -> bool:
        """Keep the request and acknowledge its entry in one step; False: already kept."""
        ...

    async def waiting(self, limit: int) -> list[str]:
        """The JSON of the oldest waiting requests (not yet in a batch), oldest first."""
        ...

    async def has_work(self) -> bool:
        """Whether any request or batch is in the lane."""
        ...

    async def waiting_stats(self) -> tuple[int, float | None]:
        """How many requests wait, and when the oldest was recorded (epoch s)."""
        ...

    async def requests(self, event_ids: Sequence[str]) -> list[str | None]:
        """The JSON of each request still in the lane (None: answered or dead-lettered)."""
        ...

    async def batches(self) -> list[str]:
        """The JSON of every batch record."""
        ...

    async def lock(self, token: str, ttl_seconds: float) -> bool:
        """Take or renew the lane lock; False while another worker holds it."""
        ...

    async def unlock(self, token: str) -> None: ...

    async def claim(
        self, token: str, local_id: str, record_json: str, event_ids: Sequence[str]
    ) -> bool:
        """Move waiting requests into a new batch record ("submitting"), under the lock."""
        ...

    async def update(self, token: str, local_id: str, record_json: str) -> bool: ...

    async def finish(self, token: str, local_id: str) -> bool:
        """Forget a batch whose every request reached an outcome."""
        ...

    def release_in(self, pipe: Any, event_id: str) -> None:
        """Queue, in the insight's transaction, the removal of its request from the lane."""
        ...

    async def dead_letter(
        self, entry: EntryRef, letter_json: str, *, event_id: str
    ) -> DeadLettered:
        """Push the letter (capped), drop the request and its lease together."""
        ...
