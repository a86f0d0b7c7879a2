"""Group commit: events ready together share one round trip, each gets its own replies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from app.adapters.redis_batch import GroupCommit

pytestmark = pytest.mark.integration


def queueing(command: Callable[[Pipeline], object]) -> Callable[[Pipeline], None]:
    """A caller's queueing callback that queues one command (its reply comes from the batch)."""

    def queue(pipe: Pipeline) -> None:
        command(pipe)

    return queue


async def test_concurrent_submissions_share_one_round_trip(redis):
    """50 events submitting at once are sent in far fewer batches, replies kept apart."""
    batcher = GroupCommit(redis, transaction=True)

    async def one(n: int) -> list[Any]:
        def queue(pipe: Pipeline) -> None:
            pipe.set(f"k{n}", n)
            pipe.incrby("total", n)

        return await batcher.submit(queue)

    replies = await asyncio.gather(*(one(n) for n in range(50)))
    assert batcher.batches <= 2
    assert all(reply[0] is True for reply in replies)
    assert sorted(reply[1] for reply in replies)[-1] == sum(range(50))
    assert int(await redis.get("total")) == sum(range(50))
    assert int(await redis.get("k7")) == 7


async def test_one_callers_error_reply_is_its_own(redis):
    """A WRONGTYPE reply reaches only the caller whose command caused it."""
    await redis.set("a-string", "x")
    batcher = GroupCommit(redis, transaction=True)
    bad, good = await asyncio.gather(
        batcher.submit(queueing(lambda pipe: pipe.lpush("a-string", "y"))),
        batcher.submit(queueing(lambda pipe: pipe.set("fine", "1"))),
    )
    assert isinstance(bad[0], ResponseError)
    assert good == [True]
    assert await redis.get("fine") == b"1"


async def test_a_batch_aborted_by_one_caller_is_retried_caller_by_caller(redis):
    """A command refused at queue time (EXECABORT) fails its caller alone; others are written."""
    batcher = GroupCommit(redis, transaction=True)

    async def broken() -> list[Any]:
        return await batcher.submit(queueing(lambda pipe: pipe.execute_command("SET", "only-key")))

    results = await asyncio.gather(
        broken(),
        batcher.submit(queueing(lambda pipe: pipe.set("kept", "1"))),
        return_exceptions=True,
    )
    assert isinstance(results[0], ResponseError)
    assert results[1] == [True]
    assert await redis.get("kept") == b"1"


async def test_async_queueing_callbacks_are_awaited(redis):
    """A callback that must await (a FastStream publish) queues its command in order."""
    batcher = GroupCommit(redis, transaction=False)

    async def queue(pipe: Pipeline) -> None:
        await asyncio.sleep(0)
        pipe.rpush("list", "from-async")

    assert await batcher.submit(queue) == [1]
    assert await redis.lrange("list", 0, -1) == [b"from-async"]


async def test_a_loaded_script_runs_even_after_redis_forgot_its_scripts(redis):
    """A Redis restarted empty (SCRIPT FLUSH here) answers the batch's EVALSHA: the batch
    loads the scripts its callers run."""
    batcher = GroupCommit(redis, transaction=True)
    sha = batcher.load("return redis.call('INCR', KEYS[1])")

    def run(pipe: Pipeline) -> None:
        pipe.evalsha(sha, 1, "counter")

    assert await batcher.submit(run, scripts=(sha,)) == [1]
    await redis.script_flush()
    assert await batcher.submit(run, scripts=(sha,)) == [2]


async def test_a_batch_loads_only_the_scripts_its_callers_run(redis):
    """Registered scripts cost nothing to a batch that does not run them."""
    batcher = GroupCommit(redis, transaction=True)
    batcher.load("return 'unused'")
    await redis.config_resetstat()
    await batcher.submit(queueing(lambda pipe: pipe.set("plain", "1")))
    stats = await redis.info("commandstats")
    assert not any(name.startswith("cmdstat_script") for name in stats)
    assert stats["cmdstat_set"]["calls"] == 1
