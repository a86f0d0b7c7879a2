"""Group commit: the Redis work of events that are ready together goes in one round trip.

Each event's commands are queued by a callback onto a shared pipeline; while one batch is
on the wire the next one gathers. A caller gets back exactly the replies of its own
commands (errors included, as values), so one event's bad reply never becomes another
event's failure. With ``transaction=True`` the batch is one MULTI/EXEC: every event's
writes stay atomic (the whole batch is, in fact).

Under load this turns N events x (admission + writes + XACK) into about two round trips
per batch instead of two per event; with one event at a time it costs nothing but one
trip through the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.adapters.redis_errors import says_not_now

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = ["GroupCommit", "QueueCommands"]

QueueCommands = Callable[["Pipeline"], Awaitable[None] | None]
"""Queues one caller's commands on the pipeline (may be async, e.g. a FastStream publish)."""


@dataclass(slots=True)
class _Job:
    queue: QueueCommands
    done: asyncio.Future[list[Any]]
    scripts: tuple[str, ...]  # the SHA-1s of the loaded scripts its commands run


class GroupCommit:
    def __init__(
        self,
        redis: Redis,
        *,
        transaction: bool,
        prelude: Callable[[Pipeline], Any] | None = None,
        max_batch: int = 512,
    ) -> None:
        """``prelude`` queues commands that open every batch (their replies are dropped)."""
        self._redis = redis
        self._transaction = transaction
        self._prelude = prelude
        self._scripts: dict[str, str] = {}  # SHA-1 -> body
        self._max_batch = max_batch
        self._jobs: list[_Job] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # how many round trips were made (for benchmarks and tests)

    def load(self, script: str) -> str:
        """Register ``script``; returns its SHA-1, for ``EVALSHA`` in ``submit(scripts=)``.

        Every batch that runs it opens with its ``SCRIPT LOAD`` (idempotent, and cheap next
        to sending its body with every call): an ``EVALSHA`` can then never meet a Redis
        that restarted empty (NOSCRIPT), which inside MULTI/EXEC would fail the script and
        still run the rest of the transaction.
        """
        sha = hashlib.sha1(script.encode()).hexdigest()
        self._scripts[sha] = script
        return sha

    async def submit(self, queue: QueueCommands, *, scripts: tuple[str, ...] = ()) -> list[Any]:
        """Queue ``queue``'s commands in the next batch; its own replies come back.
        ``scripts``: the SHA-1s (from ``load``) of the scripts they run."""
        job = _Job(queue, asyncio.get_running_loop().create_future(), scripts)
        self._jobs.append(job)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="redis-group-commit")
        return await job.done

    async def _drain(self) -> None:
        batch: list[_Job] = []
        try:
            while self._jobs:
                # One pass of the event loop lets the events finishing now join this batch.
                await asyncio.sleep(0)
                batch, self._jobs = self._jobs[: self._max_batch], self._jobs[self._max_batch :]
                batch = [job for job in batch if not job.done.done()]  # cancelled callers
                if batch:
                    await self._run_isolated(batch)
                batch = []
        except BaseException as exc:  # cancelled with the loop: nobody may wait forever
            _fail(batch + self._jobs, exc)
            self._jobs = []
            raise

    async def _run_isolated(self, batch: list[_Job]) -> None:
        try:
            await self._run(batch)
        except Exception as exc:
            if says_not_now(exc) or len(batch) == 1:  # the same for every caller
                _fail(batch, exc)
                return
            # One caller's commands broke the whole batch (e.g. EXECABORT): run each alone,
            # so that only that caller sees the error.
            for job in batch:
                try:
                    await self._run([job])
                except Exception as single:
                    _fail([job], single)

    async def _run(self, batch: list[_Job]) -> None:
        self.batches += 1
        async with self._redis.pipeline(transaction=self._transaction) as pipe:
            for sha in dict.fromkeys(sha for job in batch for sha in job.scripts):
                pipe.script_load(self._scripts[sha])
            if self._prelude is not None:
                self._prelude(pipe)
            start = len(pipe)
            sizes = []
            for job in batch:
                before = len(pipe)
                queued = job.queue(pipe)
                if queued is not None:
                    await queued
                sizes.append(len(pipe) - before)
            replies = await pipe.execute(raise_on_error=False)
        for job, size in zip(batch, sizes, strict=True):
            if not job.done.done():
                job.done.set_result(list(replies[start : start + size]))
            start += size


def _fail(batch: list[_Job], exc: BaseException) -> None:
    for job in batch:
        if not job.done.done():
            job.done.set_exception(exc)
