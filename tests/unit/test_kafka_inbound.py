"""KafkaInbound with a fake consumer: what is committed, when, and what a rebalance does."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from app.handlers.kafka_inbound import KafkaInbound, RecordWork
from app.runtime.state import WorkerState

TP = TopicPartition("events", 0)


class FakeConsumer:
    """Records the offsets committed, as aiokafka's consumer would store them."""

    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []
        self.fail = False

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.fail:
            raise RuntimeError("rebalance in progress")
        self.commits.append({tp.partition: meta.offset for tp, meta in offsets.items()})


class Records:
    """Works whose end the test decides: ``finish(offset)`` lets one end as done."""

    def __init__(self, *, failures: int = 0) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.counts: dict[int, int] = {}
        self.handled: list[int] = []
        self.given_up: list[tuple[int, int]] = []
        self.failures = failures

    def work(self, offset: int, tp: TopicPartition = TP) -> RecordWork:
        gate = self.gates.setdefault(offset, asyncio.Event())

        async def handle() -> bool:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("boom")
            await gate.wait()
            self.handled.append(offset)
            return True

        async def count() -> int:
            self.counts[offset] = self.counts.get(offset, 0) + 1
            return self.counts[offset]

        async def give_up(deliveries: int) -> None:
            self.given_up.append((offset, deliveries))

        async def forget() -> None:
            return None

        return RecordWork(tp, offset, handle, give_up, count, forget)

    def finish(self, *offsets: int) -> None:
        for offset in offsets:
            self.gates.setdefault(offset, asyncio.Event()).set()


def inbound(
    consumer: FakeConsumer,
    *,
    concurrency: int = 8,
    revoke_seconds: float = 1.0,
    retry_seconds: float = 0.5,
    state: WorkerState | None = None,
) -> KafkaInbound:
    return KafkaInbound(
        concurrency=concurrency,
        max_deliveries=3,
        revoke_seconds=revoke_seconds,
        consumer=lambda: consumer,
        state=state or WorkerState(),
        retry_seconds=retry_seconds,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_only_the_contiguous_done_prefix_is_committed():
    """Records 0..3 in flight, 1..3 done first: nothing past 0 is committed until 0 ends."""
    consumer, records = FakeConsumer(), Records()
    unit = inbound(consumer)
    for offset in range(4):
        assert await unit.accept(records.work(offset))
    records.finish(1, 2, 3)
    await settle()
    await unit.commit()
    assert consumer.commits == [{0: 0}]
    records.finish(0)
    await settle()
    await unit.commit()
    assert consumer.commits[-1] == {0: 4}


async def test_a_revocation_waits_for_the_records_in_flight_then_commits_them():
    """Revoked partitions finish their records (within the bound) and commit before moving;
    a record that does not finish in time is cancelled and not committed."""
    consumer, records = FakeConsumer(), Records()
    unit = inbound(consumer, revoke_seconds=0.3)
    for offset in range(3):
        await unit.accept(records.work(offset))
    records.finish(0)
    asyncio.get_running_loop().call_later(0.05, records.finish, 1)
    await unit.on_partitions_revoked({TP})
    assert records.handled == [0, 1]
    assert consumer.commits == [{0: 2}]  # 2 was cancelled: read again by the next owner
    assert unit.in_flight == 0
    assert not await unit.accept(records.work(3))  # no longer ours


async def test_a_record_waiting_for_a_slot_through_a_rebalance_is_not_begun():
    """With every slot taken, a record waits; a rebalance meanwhile (even one giving the
    partition back) means it is read again from the commit, so it is not begun."""
    consumer, records = FakeConsumer(), Records()
    unit = inbound(consumer, concurrency=1, revoke_seconds=0.2)
    await unit.accept(records.work(0))
    waiting = asyncio.create_task(unit.accept(records.work(1)))
    await settle()
    await unit.on_partitions_revoked({TP})  # cancels 0 after 0.2 s, frees the slot
    await unit.on_partitions_assigned({TP})
    assert await waiting is False
    assert unit.in_flight == 0


async def test_a_handling_that_keeps_failing_is_retried_then_given_up_at_max_deliveries():
    """Each retry counts as a delivery; past MAX_DELIVERIES (3) the record is given up
    (dead-lettered) and committed past."""
    consumer, records = FakeConsumer(), Records(failures=10)
    unit = inbound(consumer, retry_seconds=0.001)
    await unit.accept(records.work(0))
    await unit.drain(5.0)
    assert records.given_up == [(0, 4)]
    assert records.handled == []
    assert consumer.commits == [{0: 1}]


async def test_a_failed_commit_is_reported_and_the_offsets_are_offered_again():
    """A commit refused (a rebalance under way) is not recorded: the next one sends it."""
    consumer, records = FakeConsumer(), Records()
    unit = inbound(consumer)
    await unit.accept(records.work(0))
    records.finish(0)
    await settle()
    consumer.fail = True
    assert await unit.commit() is False
    consumer.fail = False
    assert await unit.commit() is True
    assert consumer.commits == [{0: 1}]


async def test_drain_at_shutdown_stops_new_records_and_commits_what_finished():
    """Stopping: no record is begun any more; those in flight finish and are committed."""
    consumer, records, state = FakeConsumer(), Records(), WorkerState()
    unit = inbound(consumer, state=state)
    await unit.accept(records.work(0))
    state.stop()
    assert not await unit.accept(records.work(1))
    records.finish(0)
    assert await unit.drain(1.0) == 0
    assert consumer.commits == [{0: 1}]
