"""What the parts of one worker process share at run time, built once in the composition root."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

__all__ = ["WorkerState", "wait_or_timeout"]


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``event`` is set first (e.g. stopping); True if set."""
    with contextlib.suppress(TimeoutError):
        # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancel that arrives as
        # the event is set (see app/cli/lost_cancel.py), and it starts a task per wait.
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


@dataclass(slots=True)
class WorkerState:
    """The start and stop signals and the entries that failed here, shared by the event
    path and the recovery loop.

    ``started`` is set once the broker runs (the background loops wait for it).
    ``stopping`` is set when the worker begins to shut down: no new model call starts, the
    claim loop stops, a call waiting on a rate limit is postponed. ``failed`` holds the
    entries whose processing raised (a bug, not an outcome): the recovery loop leaves them
    to go idle, so that a claim retries them and MAX_DELIVERIES ends them, instead of
    keeping them fresh. ``redis_refusal`` is set while events wait for Redis to accept
    their writes again.
    """

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    stopping_since: float | None = None  # time.monotonic() when the stop began
    failed: set[str] = field(default_factory=set)
    # Why Redis refuses the event path's writes right now (``OOM``, ``READONLY``,
    # ``ConnectionError``...), None while it accepts them: readiness reports it.
    redis_refusal: str | None = None

    def stop(self) -> None:
        """The worker begins to shut down."""
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        self.stopping.set()

    def left_of(self, budget: float) -> float:
        """What is left of ``budget`` seconds counted from the start of the stop."""
        if self.stopping_since is None:
            return budget
        return max(0.0, budget - (time.monotonic() - self.stopping_since))

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the worker starts stopping; True if it is."""
        return await wait_or_timeout(self.stopping, seconds)
