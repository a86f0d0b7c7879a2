"""The batch lane's one submitter and poller: whichever worker holds the lane lock.

Every worker runs a ``LaneRunner``; on each tick it samples the group's lag (the lane's
``GROQ_BATCH_WHEN_LAG_ABOVE`` decision) and the lane's gauges, then tries the lane lock.
The holder:

1. **submits** when ``GROQ_BATCH_MAX_EVENTS`` requests wait or the oldest has waited
   ``GROQ_BATCH_MAX_WAIT_SECONDS``: it claims the oldest requests into a batch record
   ("submitting", with a fresh lane id) *before* uploading, then uploads the JSONL file and
   creates the batch with the lane id in its ``metadata``, then records Groq's batch id;
2. **reconciles** a record left "submitting" (its worker was killed, or Groq did not
   answer): if Groq lists a batch with that lane id, it is that batch; otherwise the
   requests still in the lane are submitted again. So a kill -9 at any point loses no
   request and submits none twice without need;
3. **follows** submitted batches every ``GROQ_BATCH_POLL_SECONDS``; a finished one
   (completed, expired, cancelled, failed) is collected: each request still in the lane is
   written through ``BatchLane.complete`` with the batch's answer, or asked
   online when the batch has none for it. A request leaves the lane only in the
   transaction of its insight or dead letter, so collecting again after a crash writes
   only what was not written.

Readiness never depends on the lane: a slow batch is just a batch that is not done.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import structlog

from app.domain.batch import BatchRecord, BatchState, LaneRequest, pack
from app.domain.errors import LLMError, PermanentLLMError, Postponed
from app.domain.ports import BatchAPI, BatchStatus, Completion
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service.batch_lane import BatchLane
from app.settings import Settings

__all__ = ["LaneRunner"]

log = structlog.get_logger("acp.groq_worker.batch_lane")

TICK_SECONDS = 1.0


class LaneRunner:
    """Submits and follows the lane's batches while this worker holds the lane lock."""

    def __init__(
        self,
        settings: Settings,
        *,
        lane: BatchLane,
        api: BatchAPI,
        metrics: Metrics,
        state: WorkerState,
        lag: Callable[[], Awaitable[int | None]],
        tick_seconds: float = TICK_SECONDS,
        lock_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._lane = lane
        self._store = lane.store
        self._api = api
        self._metrics = metrics
        self._state = state
        self._lag = lag
        self._tick = tick_seconds
        self._lock_ttl = lock_ttl_seconds
        self._clock = clock
        self.token = f"{settings.worker_id}:{uuid.uuid4().hex[:12]}"
        self.holding = False
        self._renewed_at = 0.0
        self._next_poll = 0.0

    async def run(self) -> None:
        """Tick until the worker stops; then let the lock go (another worker takes over)."""
        failing = False
        try:
            while not self._state.stopping.is_set():
                try:
                    await self.tick()
                except (asyncio.CancelledError, Postponed):
                    raise
                except Exception as exc:  # Redis or Groq away: say it once, keep ticking
                    self._metrics.batch_lane_errors.inc()
                    if not failing:
                        log.warning("batch_lane_step_failed", error=f"{type(exc).__name__}: {exc}")
                    failing = True
                else:
                    failing = False
                if await self._state.pause(self._tick):
                    break
        except Postponed:
            pass
        finally:
            if self.holding:
                self.holding = False
                try:
                    await self._store.unlock(self.token)
                except Exception as exc:  # it expires by itself
                    log.info("batch_lane_unlock_failed", error=str(exc))

    async def tick(self) -> None:
        """One step: sample, then submit and follow if this worker holds the lock."""
        if self._lane.policy.lag_above > 0:  # otherwise the lag decides nothing
            self._lane.lag = await self._lag()
        count, oldest = await self._sample()
        if not await self._hold():
            return
        await self.submit_due(count, oldest)
        now = self._clock()
        if now >= self._next_poll:
            self._next_poll = now + self._settings.groq_batch_poll_seconds
            await self.follow()

    # -- the lock -------------------------------------------------------------------

    async def _hold(self) -> bool:
        held = await self._store.lock(self.token, self._lock_ttl)
        if held and not self.holding:
            log.info("batch_lane_lock_taken", token=self.token)
        self.holding = held
        self._renewed_at = self._clock() if held else 0.0
        return held

    async def _still_holding(self) -> bool:
        """Renew the lock when a third of it is gone; False once another worker has it."""
        if not self.holding:
            return False
        if self._clock() - self._renewed_at > self._lock_ttl / 3:
            return await self._hold()
        return True

    # -- submitting -----------------------------------------------------------------

    async def submit_due(self, count: int, oldest: float | None) -> str | None:
        """Submit one batch if one is due (``count`` waiting, the oldest recorded at
        ``oldest``); its lane id, or None."""
        settings = self._settings
        if not count or oldest is None:
            return None
        draining = not self._lane.policy.enabled  # the lane is off: nothing more will come
        if (
            not draining
            and count < settings.groq_batch_max_events
            and self._clock() - oldest < settings.groq_batch_max_wait_seconds
        ):
            return None
        waiting = [
            LaneRequest.model_validate_json(raw)
            for raw in await self._store.waiting(settings.groq_batch_max_events)
        ]
        if not waiting:
            return None
        taken, content = pack(waiting, self._line, max_lines=settings.groq_batch_max_events)
        record = BatchRecord(
            local_id=uuid.uuid4().hex,
            event_ids=tuple(request.event_id for request in taken),
            created_at=self._clock(),
        )
        # Claimed before the upload: a worker killed from here on leaves a "submitting"
        # record that the next lock holder reconciles (see ``_reconcile``).
        if not await self._store.claim(
            self.token, record.local_id, record.model_dump_json(), record.event_ids
        ):
            self.holding = False
            return None
        await self._send(record, content)
        return record.local_id

    def _line(self, request: LaneRequest) -> bytes:
        return self._api.line(request.event_id, request.completion_request())

    async def _send(self, record: BatchRecord, content: bytes) -> None:
        try:
            batch_id = await self._api.submit(record.local_id, content)
        except PermanentLLMError as exc:
            # The Batch API refuses the file (a 4xx): its requests go to the online lane.
            log.error("batch_refused", local_id=record.local_id, error=str(exc))
            self._metrics.batch_lane_fallbacks.labels(reason="refused").inc(len(record.event_ids))
            await self._collect(record, None, f"the Batch API refused the batch: {exc}")
            return
        except LLMError as exc:  # transient: reconciled on the next poll
            log.warning("batch_submit_failed", local_id=record.local_id, error=str(exc))
            self._next_poll = 0.0
            return
        submitted = record.model_copy(update={"groq_id": batch_id, "state": BatchState.VALIDATING})
        await self._store.update(self.token, record.local_id, submitted.model_dump_json())
        self._metrics.batches_submitted.inc()
        log.info(
            "batch_submitted",
            local_id=record.local_id,
            batch_id=batch_id,
            requests=len(record.event_ids),
            bytes=len(content),
        )

    async def _reconcile(self, record: BatchRecord) -> None:
        """A batch left "submitting": find it at Groq by its lane id, or submit it again."""
        found = await self._api.find(record.local_id)
        if found is not None:
            log.info("batch_reconciled", local_id=record.local_id, batch_id=found.batch_id)
            await self._update(record, found)
            return
        present = await self._present(record.event_ids)
        if not present:
            await self._store.finish(self.token, record.local_id)
            return
        content = b"".join(map(self._line, present))
        log.info("batch_resubmitted", local_id=record.local_id, requests=len(present))
        await self._send(record, content)

    # -- following ------------------------------------------------------------------

    async def follow(self) -> None:
        """Ask Groq about every batch of the lane; collect the finished ones."""
        for raw in await self._store.batches():
            if not await self._still_holding():
                return
            record = BatchRecord.model_validate_json(raw)
            if record.state is BatchState.SUBMITTING or record.groq_id is None:
                await self._reconcile(record)
                continue
            status = await self._api.retrieve(record.groq_id)
            record = await self._update(record, status)
            if record.state.terminal:
                await self._collect(record, status, f"the batch ended {record.state.value}")

    async def _update(self, record: BatchRecord, status: BatchStatus) -> BatchRecord:
        try:
            state = BatchState(status.status)
        except ValueError:
            return record  # a status this version does not know: keep following
        if state is record.state and status.batch_id == record.groq_id:
            return record
        updated = record.model_copy(update={"state": state, "groq_id": status.batch_id})
        await self._store.update(self.token, record.local_id, updated.model_dump_json())
        log.info("batch_state", local_id=record.local_id, batch_id=status.batch_id, state=state)
        return updated

    async def _collect(
        self, record: BatchRecord, status: BatchStatus | None, unanswered: str
    ) -> None:
        """Write every answered request; ask the others online. Then forget the batch."""
        answers = await self._api.results(status) if status is not None else {}
        present = await self._present(record.event_ids)
        limit = asyncio.Semaphore(self._settings.worker_concurrency)
        lost_lock = False

        async def complete(request: LaneRequest) -> None:
            nonlocal lost_lock
            async with limit:
                if lost_lock or not await self._still_holding():
                    lost_lock = True  # another worker collects what is left
                    return
                answer = answers.get(request.event_id, unanswered)
                if not isinstance(answer, Completion):
                    reason = "failed_line" if request.event_id in answers else "unanswered"
                    self._metrics.batch_lane_fallbacks.labels(reason=reason).inc()
                await self._lane.complete(request, answer)

        # Every request's step ends before the batch is looked at again: a failure of one
        # (Redis away) must not leave others running while the next tick collects anew.
        outcomes = await asyncio.gather(
            *(complete(request) for request in present), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]
        if lost_lock:
            return
        await self._store.finish(self.token, record.local_id)
        log.info(
            "batch_collected",
            local_id=record.local_id,
            batch_id=record.groq_id,
            state=record.state.value,
            answered=sum(isinstance(a, Completion) for a in answers.values()),
            requests=len(present),
        )

    async def _present(self, event_ids: Sequence[str]) -> list[LaneRequest]:
        """The requests of ``event_ids`` still in the lane (not yet written)."""
        found = await self._store.requests(event_ids)
        return [LaneRequest.model_validate_json(raw) for raw in found if raw is not None]

    # -- gauges ---------------------------------------------------------------------

    async def _sample(self) -> tuple[int, float | None]:
        """Set the lane's gauges; the requests waiting and when the oldest was recorded."""
        count, oldest = await self._store.waiting_stats()
        self._metrics.batch_lane_waiting.set(count)
        self._metrics.batch_lane_oldest_seconds.set(
            max(0.0, self._clock() - oldest) if oldest is not None else 0.0
        )
        states = dict.fromkeys((state.value for state in BatchState), 0)
        for raw in await self._store.batches():
            states[BatchRecord.model_validate_json(raw).state.value] += 1
        for state, n in states.items():
            self._metrics.batch_lane_batches.labels(state=state).set(n)
        return count, oldest
