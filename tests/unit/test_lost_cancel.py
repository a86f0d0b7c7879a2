"""Python 3.11's wait_for losing a cancel, and the demo's loop that does not lose it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from typing import Any

import pytest
from rich.console import Console

from app.cli.demo.follow import follow as _follow
from app.cli.demo.model import DemoRun
from app.cli.lost_cancel import raise_lost_cancel
from app.settings import load_settings


async def cancel_as_the_reply_lands(call: Any) -> asyncio.Task[Any]:
    """Start ``call(reply)`` in a task; resolve ``reply`` and cancel the task in one step."""
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(call(reply))
    for _ in range(3):  # the task is inside wait_for, its inner task waits for the reply
        await asyncio.sleep(0)
    reply.set_result("reply")
    task.cancel()
    return task


async def test_python_311_wait_for_loses_a_cancel_that_meets_its_result():
    """The upstream behaviour app/cli/lost_cancel.py works around (CPython gh-86296).
    When this fails on 3.11, the workaround can go."""

    async def through_wait_for(reply: asyncio.Future[str]) -> tuple[str, int]:
        async def inner() -> str:
            return await reply

        result = await asyncio.wait_for(inner(), 10)
        return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    task = await cancel_as_the_reply_lands(through_wait_for)
    if sys.version_info < (3, 12):
        assert await task == ("reply", 1)  # returned, yet the cancel is still counted
    else:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_raise_lost_cancel_raises_only_in_a_cancelled_task():
    raise_lost_cancel()  # not cancelled: nothing

    async def loses_then_checks(reply: asyncio.Future[str]) -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await reply  # lost, as 3.11's wait_for loses it when the reply is there
        raise_lost_cancel()
        return "ran on"

    task = await cancel_as_the_reply_lands(loses_then_checks)
    with pytest.raises(asyncio.CancelledError):
        await task


class RedisLosingOneCancel:
    """Answers the demo's progress queries; the first one loses its cancel as 3.11 does."""

    def __init__(self) -> None:
        self.first: asyncio.Future[Any] | None = None
        self.calls = 0

    async def xinfo_groups(self, stream: str) -> list[Any]:
        self.calls += 1
        if self.first is None:
            self.first = asyncio.get_running_loop().create_future()

            async def inner() -> Any:
                assert self.first is not None
                return await self.first

            return await asyncio.wait_for(inner(), 10)  # as redis-py sends a command
        return []


async def test_the_demos_progress_loop_ends_when_a_redis_reply_swallowed_its_cancel():
    """Ctrl-C meeting a Redis reply: the demo stops instead of running to its end."""
    redis = RedisLosingOneCancel()
    run = DemoRun(load_settings(), "redis://unused", None, "0001", [], entry_ids=["1-0"])
    console = Console(file=io.StringIO())
    task = asyncio.create_task(_follow(redis, run, console, within=2.0))  # type: ignore[arg-type]
    while redis.first is None:
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)
    redis.first.set_result([])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert redis.calls == 1  # it did not poll on
