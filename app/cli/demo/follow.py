"""Publishing the sample as a gateway does, then following it until every entry has an outcome.

An entry has its outcome once the group has delivered and acknowledged it (whichever
consumer did) and nothing of the run still waits in the batch lane. The progress bar
shows the worker's outcome counts as they come, when the worker runs in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from app.adapters import inspect
from app.adapters.redis_clients import RedisClient
from app.adapters.redis_lane import RedisLaneStore
from app.adapters.redis_replies import as_text
from app.cli.demo.events import SampleEntry
from app.cli.demo.model import DemoRun
from app.cli.demo.render import tally
from app.cli.demo.worker import outcome_count
from app.cli.lost_cancel import raise_lost_cancel
from app.domain.insights import Outcome
from app.domain.retention import StreamId
from app.settings import Settings

__all__ = ["entries_done", "follow", "publish"]

POLL_SECONDS = 0.1


async def publish(redis: RedisClient, stream: str, entries: Sequence[SampleEntry]) -> list[str]:
    """XADD every entry in the gateway's wire format; their entry ids, in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.xadd(stream, entry.fields)  # type: ignore[arg-type]
        ids = await pipe.execute()
    return [as_text(entry_id) for entry_id in ids]


async def entries_done(redis: RedisClient, settings: Settings, entry_ids: Sequence[str]) -> int:
    """How many of ``entry_ids`` the group has delivered and acknowledged (any consumer)."""
    stream, group = settings.insight_stream, settings.insight_group
    info = await inspect.group_info(redis, stream, group)
    if info is None or not entry_ids:
        return 0
    delivered_up_to = StreamId.parse(info.last_delivered_id)
    ordered = sorted(entry_ids, key=StreamId.parse)
    pending = await redis.xpending_range(
        stream, group, min=ordered[0], max=ordered[-1], count=len(ordered)
    )
    still_pending = {as_text(row["message_id"]) for row in pending}
    return sum(
        1
        for entry_id in entry_ids
        if StreamId.parse(entry_id) <= delivered_up_to and entry_id not in still_pending
    )


async def _lane_settled(redis: RedisClient, run: DemoRun) -> bool:
    """Nothing of the run waits in the batch lane (its entries are acked before that)."""
    if not run.settings.groq_batch_severities:
        return True
    lane = await RedisLaneStore(redis).summary()
    return not lane.waiting and not lane.batches


async def follow(redis: RedisClient, run: DemoRun, console: Console, within: float) -> bool:
    """Show progress until every entry is acked; False when ``within`` seconds pass first."""
    total = len(run.entry_ids)
    deadline = time.monotonic() + within
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[outcomes]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("processing", total=total, outcomes="")
        while True:
            done = await entries_done(redis, run.settings, run.entry_ids)
            settled = done >= total and await _lane_settled(redis, run)
            raise_lost_cancel()
            progress.update(task, completed=done, outcomes=tally(run.worker))
            if settled:
                break
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        if run.worker is not None:
            # An outcome is counted just after its ack: let the counter catch up (bounded).
            for _ in range(50):
                if sum(outcome_count(run.worker, o) for o in Outcome) >= total:
                    break
                await asyncio.sleep(0.02)
        progress.update(task, description="processed", outcomes=tally(run.worker))
    return True
