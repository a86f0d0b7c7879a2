"""``groq-worker consumers prune``: remove consumers of dead processes that hold nothing.

Each worker process joins the group under its own name (``<host>-<pid>``), so every
restart leaves a consumer behind in ``XINFO CONSUMERS``. Prune deletes those that have
not read for ``--idle`` and hold no pending entry; the check and the ``XGROUP
DELCONSUMER`` run in one script, so a consumer that read in between is kept. A consumer
that still holds entries is never deleted (its entries would be lost from the pending
list): the worker's claim loop moves them to a live consumer first. Deleting a live
consumer would be harmless anyway: its next read recreates it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from app.adapters import inspect
from app.adapters.redis_clients import RedisClient
from app.cli._common import EXIT_OK, EXIT_PROBLEM, run_with_redis
from app.cli.status import format_duration
from app.settings import Settings

__all__ = ["PruneReport", "parse_duration", "prune", "register"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``1h``, ``2d``, ``1h30m`` (a bare number is seconds)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    elif _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 2d or 1h30m)"
        )
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be more than zero, got {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class PruneReport:
    group_exists: bool
    min_idle_ms: int
    dry_run: bool
    # (consumer as listed, what happened: deleted / would_delete / kept_pending /
    # kept_recent / kept_busy (read since it was listed) / gone)
    decisions: list[tuple[inspect.ConsumerInfo, str]]

    @property
    def pruned(self) -> list[str]:
        done = "would_delete" if self.dry_run else "deleted"
        return [c.name for c, action in self.decisions if action == done]

    def as_json(self) -> dict[str, Any]:
        return {
            "group_exists": self.group_exists,
            "min_idle_seconds": self.min_idle_ms / 1000,
            "dry_run": self.dry_run,
            "pruned": self.pruned,
            "consumers": [
                {
                    "name": c.name,
                    "pending": c.pending,
                    "idle_seconds": c.idle_ms / 1000,
                    "action": action,
                }
                for c, action in self.decisions
            ],
        }


async def prune(
    settings: Settings, redis: RedisClient, *, min_idle_ms: int, dry_run: bool
) -> PruneReport:
    stream, group = settings.insight_stream, settings.insight_group
    if await inspect.group_info(redis, stream, group) is None:
        return PruneReport(False, min_idle_ms, dry_run, [])
    listed = await inspect.consumers(redis, stream, group)
    candidates = {c.name for c in inspect.prune_candidates(listed, min_idle_ms)}
    decisions: list[tuple[inspect.ConsumerInfo, str]] = []
    for consumer in listed:
        if consumer.name not in candidates:
            kept = "kept_pending" if consumer.pending else "kept_recent"
            decisions.append((consumer, kept))
        elif dry_run:
            decisions.append((consumer, "would_delete"))
        else:
            verdict = await inspect.delete_consumer_if_idle(
                redis, stream, group, consumer.name, min_idle_ms
            )
            action = {
                inspect.DeleteVerdict.DELETED: "deleted",
                inspect.DeleteVerdict.BUSY: "kept_busy",
                inspect.DeleteVerdict.GONE: "gone",
            }[verdict]
            decisions.append((consumer, action))
    return PruneReport(True, min_idle_ms, dry_run, decisions)


_ACTION_TEXT = {
    "deleted": "[green]deleted[/green]",
    "would_delete": "[yellow]would delete[/yellow]",
    "kept_pending": "kept: holds pending entries",
    "kept_recent": "kept: read recently",
    "kept_busy": "kept: read since listed",
    "gone": "gone already",
}


def render(report: PruneReport, console: Console) -> None:
    idle = format_duration(report.min_idle_ms)
    table = Table(
        title=f"Consumers idle for {idle} or more with nothing pending are pruned"
        + (" (dry run)" if report.dry_run else ""),
        title_justify="left",
    )
    table.add_column("consumer")
    table.add_column("pending", justify="right")
    table.add_column("idle", justify="right")
    table.add_column("action")
    for consumer, action in report.decisions:
        table.add_row(
            consumer.name,
            f"{consumer.pending:,}",
            format_duration(consumer.idle_ms),
            _ACTION_TEXT[action],
        )
    console.print(table)
    verb = "would prune" if report.dry_run else "pruned"
    console.print(f"{verb} {len(report.pruned)} of {len(report.decisions)} consumers")


def _prune(args: argparse.Namespace) -> int:
    min_idle_ms = round(args.idle * 1000)

    async def work(settings: Settings, redis: RedisClient) -> tuple[Settings, PruneReport]:
        return settings, await prune(settings, redis, min_idle_ms=min_idle_ms, dry_run=args.dry_run)

    code, result = run_with_redis("consumers prune", work)
    if result is None:
        return code
    settings, report = result
    if args.as_json:
        print(json.dumps(report.as_json(), indent=2))
    if not report.group_exists:
        print(
            f"groq-worker consumers prune: consumer group {settings.insight_group} does not "
            f"exist on {settings.insight_stream}",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    if not args.as_json:
        render(report, Console(highlight=False, soft_wrap=True))
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "consumers",
        help="manage the consumer group's consumers",
        description="Manage the consumers of INSIGHT_GROUP on INSIGHT_STREAM.",
    )
    commands = parser.add_subparsers(dest="consumers_command", metavar="COMMAND")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)
    prune_parser = commands.add_parser(
        "prune",
        help="delete consumers idle for a while that hold no pending entry",
        description="Delete the consumers that have not read for --idle and hold no pending "
        "entry (XGROUP DELCONSUMER, checked and done atomically). Consumers holding entries "
        "are always kept.",
    )
    prune_parser.add_argument(
        "--idle",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="minimum idle time, e.g. 90s, 30m, 1h, 2d",
    )
    prune_parser.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    prune_parser.add_argument(
        "--json", dest="as_json", action="store_true", help="print JSON for scripts"
    )
    prune_parser.set_defaults(handler=_prune)
