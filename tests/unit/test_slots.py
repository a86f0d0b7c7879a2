"""A process's model slots: an event waiting for one gets the next given back, in turn."""

from __future__ import annotations

import asyncio

from app.service.dispatch import Slots


async def two_waiting() -> tuple[Slots, asyncio.Task[bool], asyncio.Task[bool]]:
    """One slot, taken; two events waiting for it, in this order."""
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.take_within(1.0))
    second = asyncio.create_task(slots.take_within(1.0))
    await asyncio.sleep(0)
    return slots, first, second


async def test_a_slot_given_back_goes_to_the_first_waiting_event() -> None:
    slots, first, second = await two_waiting()
    slots.give_back()
    assert await first is True
    assert not second.done()
    slots.give_back()
    assert await second is True
    assert slots.free == 0


async def test_a_wait_that_times_out_takes_nothing_and_leaves_the_line() -> None:
    slots = Slots(1)
    assert slots.try_take()
    assert await slots.take_within(0.01) is False
    slots.give_back()
    assert slots.free == 1  # not handed to the waiter that left


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on() -> None:
    slots, first, second = await two_waiting()
    slots.give_back()  # handed to the first...
    first.cancel()  # ...which is cancelled before it runs
    assert await second is True
    assert first.cancelled()
    assert slots.free == 0
