"""At least once on Kafka: records in flight per partition, and commits of what is done.

The Kafka subscriber hands each record here (``accept``), in offset order. A record is
*begun* (``PartitionProgress``), its work runs in a task of its own (at most
``WORKER_CONCURRENCY`` at once: ``accept`` waits for a slot, which holds the consumer back),
and it is *done* once its outcome is written to Redis. A commit loop commits each
partition's contiguous done prefix, never past a record still in flight or failed.

* **Poison**: each delivery of a record is counted in Redis first (``RedisAttempts``); past
  ``MAX_DELIVERIES`` the record is dead-lettered (``max_deliveries``) instead of handled. A
  handling that raises is retried here with a backoff, each retry a delivery.
* **Rebalance**: partitions being revoked get their tasks finished (bounded by half the
  session timeout, then cancelled: what was cancelled is not done, so not committed) and
  their prefix committed before the group moves them; a record of a partition this member
  no longer owns is not begun (its next owner reads it from the commit).
* **Stop**: ``drain`` (an ``on_shutdown`` hook, before the brokers stop) lets the tasks
  finish within ``SHUTDOWN_TIMEOUT_SECONDS``, cancels the rest and commits what is done.

A crash loses nothing: what was not committed is read again, and the store's event-id
lease and budget set make a second delivery a duplicate with no second charge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.domain.offsets import PartitionProgress
from app.runtime.logs import get_logger
from app.runtime.state import WorkerState

__all__ = ["KafkaInbound", "RecordWork"]

log = get_logger("acp.groq_worker.kafka")

# How long finished records wait to be committed together (a commit per record would be a
# round trip to the coordinator per event).
_COMMIT_EVERY_SECONDS = 0.2
_COMMIT_RETRY_SECONDS = 1.0
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RecordWork:
    """One record's handling: ``handle`` returns True once its outcome is written;
    ``give_up(deliveries)`` dead-letters it as poison; ``count`` counts a delivery."""

    partition: TopicPartition
    offset: int
    handle: Callable[[], Awaitable[bool]]
    give_up: Callable[[int], Awaitable[Any]]
    count: Callable[[], Awaitable[int]]
    forget: Callable[[], Awaitable[Any]]


class KafkaInbound(ConsumerRebalanceListener):  # type: ignore[misc]
    """The records in flight, their commits, and the group's rebalances for one consumer."""

    def __init__(
        self,
        *,
        concurrency: int,
        max_deliveries: int,
        revoke_seconds: float,
        consumer: Callable[[], Any],
        state: WorkerState,
        retry_seconds: float = _RETRY_FIRST_SECONDS,
    ) -> None:
        """``consumer()`` is the subscriber's aiokafka consumer (None before it starts);
        ``retry_seconds`` the first pause before a failed handling is tried again."""
        self._retry_seconds = retry_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._max_deliveries = max_deliveries
        self._revoke_seconds = revoke_seconds
        self._consumer = consumer
        self._state = state
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] | None = None  # None: no assignment seen yet
        self._generation = 0  # moves at every revocation and assignment
        self._finished = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.commits = 0

    # -- the subscriber's side -------------------------------------------------------

    def owns(self, partition: TopicPartition) -> bool:
        """This member may begin records of ``partition`` (not revoked, not stopping)."""
        return partition not in self._revoked and not self._state.stopping.is_set()

    async def accept(self, work: RecordWork) -> bool:
        """Begin a record and run it in a task of its own once a slot is free; False when
        it is not begun (stopping, or its partition moved): it stays for the next read."""
        if not self.owns(work.partition):
            return False
        generation = self._generation
        await self._slots.acquire()
        # A rebalance while it waited: the partition (even if this member got it back)
        # is read again from its commit, which this record is not past.
        if generation != self._generation or not self.owns(work.partition):
            self._slots.release()
            return False
        progress = self._progress.setdefault(work.partition, PartitionProgress())
        if progress.next_offset is not None and work.offset < progress.next_offset:
            self._slots.release()  # already begun in this assignment: read twice
            log.warning("kafka_record_seen_twice", partition=work.partition.partition)
            return False
        progress.begin(work.offset)
        task = asyncio.create_task(self._run(work), name=f"kafka-{work.partition}-{work.offset}")
        self._tasks.setdefault(work.partition, set()).add(task)
        return True

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    @property
    def assignment(self) -> set[TopicPartition] | None:
        """The partitions of the latest assignment (None before the first one)."""
        return None if self._assigned is None else set(self._assigned)

    def lags(self) -> dict[TopicPartition, int]:
        """Per partition owned: records up to the high watermark (the broker's, from the
        last fetch) not yet done. A partition with nothing begun is left out."""
        consumer = self._consumer()
        if consumer is None:
            return {}
        lags = {}
        for tp, progress in list(self._progress.items()):
            highwater, safe = consumer.highwater(tp), progress.safe_offset
            if tp not in self._revoked and highwater is not None and safe is not None:
                lags[tp] = max(0, highwater - safe)
        return lags

    async def _run(self, work: RecordWork) -> None:
        done = False
        delay = self._retry_seconds
        try:
            while not done:
                try:
                    deliveries = await work.count()
                    if deliveries > self._max_deliveries:
                        await work.give_up(deliveries)
                        done = True
                    else:
                        done = await work.handle()
                    if not done:
                        return  # the worker began stopping: the record stays uncommitted
                except Exception as exc:
                    log.error(
                        "kafka_record_failed",
                        partition=work.partition.partition,
                        offset=work.offset,
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in=delay,
                    )
                    if await self._state.pause(delay):
                        return
                    delay = min(delay * 2, _RETRY_MAX_SECONDS)
            with contextlib.suppress(Exception):  # only tidiness: the count expires anyway
                await work.forget()
        finally:
            if done and (progress := self._progress.get(work.partition)) is not None:
                progress.done(work.offset)
                self._finished.set()
            self._tasks.get(work.partition, set()).discard(asyncio.current_task())
            self._slots.release()

    # -- commits ---------------------------------------------------------------------

    async def commit_loop(self) -> None:
        """Commit the done prefixes as records finish (until cancelled)."""
        while True:
            await self._finished.wait()
            await asyncio.sleep(_COMMIT_EVERY_SECONDS)
            self._finished.clear()
            if not await self.commit():
                self._finished.set()  # try again after a pause
                await asyncio.sleep(_COMMIT_RETRY_SECONDS)

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> bool:
        """Commit the done prefix of ``partitions`` (default: every partition owned);
        False when the commit failed (it is tried again)."""
        consumer = self._consumer()
        if consumer is None:
            return True
        async with self._commit_lock:
            chosen = (
                [tp for tp in self._progress if tp not in self._revoked]
                if partitions is None
                else [tp for tp in partitions if tp in self._progress]
            )
            offsets = {}
            for tp in chosen:
                offset = self._progress[tp].committable()
                if offset is not None:
                    offsets[tp] = offset
            if not offsets:
                return True
            try:
                await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            except Exception as exc:  # a rebalance under way, the coordinator away
                log.warning("kafka_commit_failed", error=f"{type(exc).__name__}: {exc}")
                return False
            self.commits += 1
            for tp, offset in offsets.items():
                if (progress := self._progress.get(tp)) is not None:  # not reassigned since
                    progress.committed_at(offset)
            return True

    # -- rebalances and the stop -----------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish (or stop) the revoked partitions' records and commit what is done,
        before the group gives them to another member."""
        if not revoked:
            return
        self._generation += 1
        self._revoked |= set(revoked)
        left = await self._settle(revoked, self._revoke_seconds)
        await self.commit(revoked)
        for tp in revoked:
            self._progress.pop(tp, None)
            self._tasks.pop(tp, None)
        log.info(
            "kafka_partitions_revoked",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked),
            cancelled=left,
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        self._assigned = set(assigned)
        self._revoked -= set(assigned)
        for tp in assigned:  # a new owner starts from the group's commit
            self._progress.pop(tp, None)
        log.info(
            "kafka_partitions_assigned",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
        )

    async def drain(self, seconds: float) -> int:
        """At shutdown (new records are no longer begun): let the tasks finish within
        ``seconds``, cancel the rest, commit what is done; returns how many were cancelled."""
        left = await self._settle(list(self._tasks), seconds)
        await self.commit()
        return left

    async def _settle(self, partitions: Iterable[TopicPartition], seconds: float) -> int:
        tasks = [task for tp in partitions for task in self._tasks.get(tp, ())]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, seconds))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)
