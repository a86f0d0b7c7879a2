"""This process's model slots, and the waiting events handed to them, most urgent first.

``WORKER_CONCURRENCY`` slots: an event read from the stream takes one at once when it may
run now (``InsightService.process``); otherwise it waits in the scheduler, shared by every
process of the deployment, and the ``Dispatcher`` hands it to the next free slot of any
process in the scheduler's order (``app.domain.scheduling``). Beside it, the keeper extends
the leases of the jobs this process runs and gives back those of dead workers (the
scheduler's ``reap``), dead-lettering the poison ones (``MAX_DELIVERIES``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from app.domain.errors import Postponed, StoreUnavailable, WaitForCapacity
from app.domain.ports import Scheduler
from app.domain.scheduling import Handed
from app.runtime.state import WorkerState, wait_or_timeout

__all__ = ["Dispatcher", "Slots"]

log = structlog.get_logger("acp.groq_worker.dispatch")

# How often an idle dispatcher looks for events other processes scheduled (it is woken at
# once by its own).
_IDLE_POLL_SECONDS = 0.25


class Slots:
    """The model slots of one process: taken by inline events and handed-out jobs alike.

    A job the scheduler hands out takes its slot even if an inline event took the last
    one while the pick was on its way (``take``): for the length of one round trip, when
    the scheduler was empty as that event was admitted, a process may run one more. An
    event waiting for a slot (``take_within``) is handed the next one given back, in
    the order they came.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._freed = asyncio.Event()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        return max(0, self._free)

    def try_take(self) -> bool:
        """Take a slot if one is free now (never waits)."""
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    def take(self) -> None:
        """Take a slot for a job already handed to this process."""
        self._free -= 1

    async def take_within(self, seconds: float) -> bool:
        """Take a slot, waiting up to ``seconds`` for one to be given back."""
        if self.try_take():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError:
            pass
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed one as it was cancelled: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return waiter.done() and not waiter.cancelled()

    async def wait_free(self) -> None:
        """Until a slot is free."""
        while self._free <= 0:
            self._freed.clear()
            await self._freed.wait()

    def give_back(self) -> None:
        self._free += 1
        while self._free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)  # the slot passes to it
        if self._free > 0:
            self._freed.set()


class Dispatcher:
    """Hands waiting jobs to this process's free slots; keeps their leases while they run."""

    def __init__(
        self,
        scheduler: Scheduler,
        slots: Slots,
        state: WorkerState,
        *,
        idle_seconds: float,
        max_deliveries: int,
        idle_poll_seconds: float = _IDLE_POLL_SECONDS,
    ) -> None:
        """``idle_seconds``: CLAIM_IDLE_SECONDS, how long a running job of a dead worker
        waits before it is handed out again (this process marks its own alive well
        within it). ``idle_poll_seconds``: how often an idle process looks for jobs
        other processes scheduled."""
        self._scheduler = scheduler
        self.slots = slots
        self._state = state
        self._idle = idle_seconds
        self._max_deliveries = max_deliveries
        self._idle_poll = idle_poll_seconds
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._due: float | None = None  # when the soonest job this process put off is due
        # False once this process scheduled an event or a pick found the scheduler busy;
        # True when its last pick found fewer jobs than it had slots for.
        self.nothing_waits = False

    def wake(self) -> None:
        """An event was just scheduled here: look now rather than at the next poll."""
        self.nothing_waits = False
        self._wake.set()

    def due_in(self, seconds: float) -> None:
        """A job was put off for ``seconds``: the keeper queues it again when that is up,
        not at its next round (other processes' keepers do, at theirs)."""
        due = time.monotonic() + seconds
        if self._due is None or due < self._due:
            self._due = due

    @property
    def running(self) -> list[str]:
        """The event ids of the jobs this process runs now."""
        return list(self._running)

    async def run(self, run_job: Callable[[Handed], Awaitable[object]]) -> None:
        """Hand waiting jobs to free slots (``run_job`` runs one) until the worker stops;
        first, what this consumer ran when it last stopped without a goodbye."""
        stopping = self._state.stopping
        while not stopping.is_set():
            try:
                back = await self._scheduler.reclaim_own()
            except StoreUnavailable as exc:
                log.warning("reclaim_failed", error=str(exc))
                await wait_or_timeout(stopping, 1.0)
                continue
            if back:
                log.info("own_jobs_reclaimed", jobs=back)
            break
        while not stopping.is_set():
            await self.slots.wait_free()
            wanted = self.slots.free
            if stopping.is_set() or not wanted:
                continue
            try:
                # No slot is held while the pick is on its way: an event read meanwhile
                # with nothing waiting may still go on at once.
                handed = await self._scheduler.pick(wanted)
            except StoreUnavailable as exc:
                log.warning("pick_failed", error=str(exc))
                await wait_or_timeout(stopping, 1.0)
                continue
            for one in handed:
                self.slots.take()
                self._start(run_job, one)
            self.nothing_waits = len(handed) < wanted
            if not handed:  # nothing waits: until this process schedules one, or a poll
                self._wake.clear()
                await wait_or_timeout(self._wake, self._idle_poll)

    def _start(self, run_job: Callable[[Handed], Awaitable[object]], handed: Handed) -> None:
        event_id = handed.job.event_id

        async def run() -> None:
            try:
                await run_job(handed)
            except Postponed:  # the worker stops: back to the scheduler, no delivery counted
                with contextlib.suppress(StoreUnavailable):
                    await self._scheduler.later(event_id, 0)
            except WaitForCapacity as wait:  # flex is full: it waits in the scheduler, its
                # slot free for what else waits (its lease runs out if Redis is away)
                with contextlib.suppress(StoreUnavailable):
                    await self._scheduler.later(event_id, wait.retry_in)
                    self.due_in(wait.retry_in)
            except Exception:  # a bug: no outcome; its lease runs out, and it is handed out
                # again until MAX_DELIVERIES ends it
                log.exception("job_failed", event_id=event_id)

        task = asyncio.create_task(run(), name=f"job-{event_id}")
        self._running[event_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(event_id, None)
            self.slots.give_back()

        task.add_done_callback(done)

    async def keep(self, dead_letter_poison: Callable[[Handed], Awaitable[object]]) -> None:
        """Extend the leases of the jobs running here; give back those of dead workers,
        dead-lettering the poison ones (``dead_letter_poison``). Every third of a lease,
        until the worker stops."""
        interval = max(0.2, min(self._idle / 3, 10.0))
        while not await self._until_next_round(interval):
            try:
                await self._scheduler.refresh(self.running)
                for poison in await self._scheduler.reap(max_deliveries=self._max_deliveries):
                    await dead_letter_poison(poison)
            except StoreUnavailable as exc:
                log.warning("scheduler_upkeep_failed", error=str(exc))

    async def _until_next_round(self, interval: float) -> bool:
        """Until the next round: ``interval`` from now, or sooner when a job put off here
        is due (looked at every ``_IDLE_POLL_SECONDS``); True once the worker stops."""
        stopping = self._state.stopping
        round_at = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if self._due is not None and self._due <= now:
                self._due = None
                return False
            if now >= round_at:
                return False
            if await wait_or_timeout(stopping, min(round_at - now, _IDLE_POLL_SECONDS)):
                return True

    async def drain(self, within: float) -> int:
        """At a graceful stop: let the running jobs finish for ``within`` seconds, then
        give the others back to the scheduler at once (none lost, no delivery counted).
        Returns how many were given back."""
        tasks = list(self._running.values())
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        left = [event_id for event_id, task in self._running.items() if not task.done()]
        for event_id in left:
            self._running[event_id].cancel()
        given = 0
        for event_id in left:
            try:
                given += await self._scheduler.later(event_id, 0)
            except StoreUnavailable:  # Redis away: its lease runs out, then it is reaped
                break
        return given
