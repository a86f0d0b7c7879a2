"""What the run left in Redis, read back: each event's insight or dead letter, and the keys.

Only reads; ``app.cli.demo.render`` turns what is read here into the summary tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from app.adapters import inspect
from app.adapters.dlq import parse_letter
from app.adapters.redis_clients import RedisClient
from app.cli.demo.model import DemoRun, EventResult
from app.domain.insights import DeadLetter
from app.domain.keys import Keys

__all__ = ["KeyCounts", "key_counts", "results"]


@dataclass(frozen=True)
class KeyCounts:
    """What the worker's keys hold once the run is over (tenants and agents sorted by name)."""

    inbound: int  # entries of the gateway's stream
    group: inspect.GroupInfo | None
    timeline: int
    created: int  # InsightCreated messages
    letters: int
    by_tenant: dict[str, int]
    by_agent: dict[str, int]
    spent: dict[str, int]  # each tenant's rate-limit counter


async def results(redis: RedisClient, run: DemoRun) -> list[EventResult]:
    """Each sample event with its insight or its dead letter, read back from Redis."""
    by_event: dict[str, EventResult] = {}
    for entry, entry_id in zip(run.entries, run.entry_ids, strict=True):
        by_event.setdefault(entry.event_id, EventResult(entry)).entry_ids.append(entry_id)
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in by_event:
            pipe.get(Keys.insight(event_id))
        records = await pipe.execute()
    for result, raw in zip(by_event.values(), records, strict=True):
        if raw is not None:
            result.record = json.loads(raw)
    # The DLQ is newest first, so this run's letters are among the first ones.
    ours = {entry_id: result for result in by_event.values() for entry_id in result.entry_ids}
    for raw in await redis.lrange(Keys.DLQ, 0, max(100, 2 * len(run.entry_ids)) - 1):
        letter = parse_letter(raw)
        if isinstance(letter, DeadLetter) and letter.entry_id in ours:
            ours[letter.entry_id].letter = letter
    return list(by_event.values())


async def key_counts(redis: RedisClient, run: DemoRun, results: Sequence[EventResult]) -> KeyCounts:
    """The sizes of the worker's keys, for the tenants and agents of ``results``."""
    settings = run.settings
    tenants = sorted({r.entry.tenant_id for r in results})
    agents = sorted({r.entry.agent_id for r in results})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(settings.insight_stream)
        pipe.zcard(Keys.TIMELINE)
        pipe.xlen(Keys.INSIGHTS_STREAM)
        pipe.llen(Keys.DLQ)
        for tenant in tenants:
            pipe.zcard(Keys.by_tenant(tenant))
        for agent in agents:
            pipe.llen(Keys.by_agent(agent))
        for tenant in tenants:
            pipe.get(Keys.rate_limit(tenant))
        replies = await pipe.execute()
    inbound, timeline, created, letters = (int(v) for v in replies[:4])
    by_tenant = [int(v) for v in replies[4 : 4 + len(tenants)]]
    by_agent = [int(v) for v in replies[4 + len(tenants) : 4 + len(tenants) + len(agents)]]
    spent = [int(v or 0) for v in replies[4 + len(tenants) + len(agents) :]]
    group = await inspect.group_info(redis, settings.insight_stream, settings.insight_group)
    return KeyCounts(
        inbound=inbound,
        group=group,
        timeline=timeline,
        created=created,
        letters=letters,
        by_tenant=dict(zip(tenants, by_tenant, strict=True)),
        by_agent=dict(zip(agents, by_agent, strict=True)),
        spent=dict(zip(tenants, spent, strict=True)),
    )
