"""``groq-worker batch``: the batch lane's batches, and cancelling one.

    groq-worker batch list [--json]
    groq-worker batch cancel ID

``list`` reads the lane's state in Redis (what waits, each batch's lane id, Groq batch id,
state and size, the lock's holder). ``cancel`` asks Groq to cancel a batch (by its Groq
id or its lane id): the lane's poller then collects what it answered and asks the rest
online, as for an expired batch. Exit codes: 0 done, 1 Redis or Groq failing or no such
batch, 2 bad usage or a bad setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from app.adapters.redis_clients import RedisClient
from app.adapters.redis_lane import LaneSummary, RedisLaneStore
from app.cli._common import EXIT_OK, EXIT_PROBLEM, run_with_redis
from app.cli.status import format_duration
from app.domain.errors import LLMError
from app.settings import Settings, SettingsError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="list the batch lane's batches, or cancel one",
        description="The batch lane (GROQ_BATCH_SEVERITIES): requests waiting for a batch "
        "and the batches submitted to Groq's Batch API.",
    )
    actions = parser.add_subparsers(dest="batch_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="what waits, and every batch not yet collected")
    listing.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    cancelling = actions.add_parser(
        "cancel",
        help="cancel a batch at Groq; what it did not answer goes to the online lane",
    )
    cancelling.add_argument("batch", metavar="ID", help="Groq's batch id or the lane id")
    cancelling.set_defaults(handler=_cancel)


def _list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, redis: RedisClient) -> LaneSummary:
        return await RedisLaneStore(redis).summary()

    code, summary = run_with_redis("batch list", work)
    if summary is None:
        return code
    now = time.time()
    if args.as_json:
        print(json.dumps(summary.as_json(now), indent=2))
        return EXIT_OK
    oldest = summary.oldest_recorded_at
    age = "" if oldest is None else f", the oldest for {format_duration((now - oldest) * 1000)}"
    print(f"{summary.waiting:,} request(s) waiting for a batch{age}")
    print(f"poller: {summary.holder or 'none (no worker holds the lane lock)'}")
    if not summary.batches:
        print("no batch submitted and not yet collected")
        return EXIT_OK
    rows = [("LANE ID", "BATCH ID", "STATE", "REQUESTS", "AGE")] + [
        (
            batch.local_id,
            batch.groq_id or "-",
            batch.state.value,
            f"{len(batch.event_ids):,}",
            format_duration((now - batch.created_at) * 1000),
        )
        for batch in summary.batches
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    from app.bootstrap import build_batch_api

    async def work(settings: Settings, redis: RedisClient) -> str:
        summary = await RedisLaneStore(redis).summary()
        known = {b.local_id: b.groq_id for b in summary.batches if b.groq_id}
        batch_id = known.get(args.batch, args.batch)
        if batch_id not in known.values():
            return f"no batch {args.batch} in the lane (groq-worker batch list)"
        api = build_batch_api(settings)
        try:
            status = await api.cancel(batch_id)
        finally:
            await api.aclose()
        print(f"{batch_id}: {status.status}; the poller collects it and asks the rest online")
        return ""

    try:
        code, problem = run_with_redis("batch cancel", work)
    except (LLMError, SettingsError) as exc:
        print(f"groq-worker batch cancel: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if problem:
        print(f"groq-worker batch cancel: {problem}", file=sys.stderr)
        return EXIT_PROBLEM
    return code
