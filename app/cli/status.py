"""``groq-worker status``: the stream, the group, its consumers, what waits in the
scheduler, the DLQ and the budgets.

A table for people, ``--json`` for scripts. Exit 0 when the group exists, 1 when it does
not (the worker never started on this stream, or Redis lost it) or Redis cannot be
reached (one line on stderr), 2 for a bad setting. Reads only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from app.adapters import inspect
from app.adapters.kafka_lag import KafkaGroupLag
from app.adapters.redis_clients import RedisClient
from app.adapters.redis_lane import LaneSummary, RedisLaneStore
from app.adapters.redis_scheduler import waiting_stats
from app.cli._common import EXIT_OK, EXIT_PROBLEM, at_least, redis_address, run_with_redis
from app.cli.kafka_status import collect_kafka_lag, render_kafka_lag
from app.domain.keys import Keys
from app.domain.scheduling import WaitingStats
from app.settings import Inbound, RedisMode, Settings

__all__ = ["StatusReport", "collect_status", "format_duration", "register"]


def format_duration(milliseconds: float | None) -> str:
    """``950ms``, ``42s``, ``3m 20s``, ``5h 2m``, ``2d 4h``; ``-`` for unknown."""
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{int(milliseconds)}ms"
    seconds = int(milliseconds // 1000)
    for unit, size, sub_unit, sub_size in (
        ("d", 86_400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            part = rest // sub_size
            return f"{whole}{unit} {part}{sub_unit}" if part else f"{whole}{unit}"
    return f"{seconds}s"


# -- status ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusReport:
    redis: str
    stream: str
    stream_length: int
    group_name: str
    group: inspect.GroupInfo | None
    oldest_pending: inspect.OldestPending | None
    consumers: list[inspect.ConsumerInfo]
    dlq: inspect.DlqSummary
    rate_limits: inspect.RateLimits
    lane_severities: tuple[str, ...]
    lane: LaneSummary
    event_order: str
    scheduler: WaitingStats | None  # None in a cluster (no scheduler there)
    now: float
    kafka: KafkaGroupLag | None = None  # INBOUND=kafka: the Kafka group's lag

    def as_json(self) -> dict[str, Any]:
        group: dict[str, Any] = {"name": self.group_name, "exists": self.group is not None}
        if self.group is not None:
            oldest = self.oldest_pending
            group |= {
                "lag": self.group.lag,
                "pending": self.group.pending,
                "consumers": self.group.consumers,
                "last_delivered_id": self.group.last_delivered_id,
                "entries_read": self.group.entries_read,
                "oldest_pending": None
                if oldest is None
                else {
                    "entry_id": oldest.entry_id,
                    "consumer": oldest.consumer,
                    "age_seconds": oldest.age_ms / 1000,
                    "idle_seconds": oldest.idle_ms / 1000,
                    "deliveries": oldest.deliveries,
                },
            }
        return {
            "redis": self.redis,
            **({"kafka": self.kafka.as_json()} if self.kafka is not None else {}),
            "stream": {"name": self.stream, "length": self.stream_length},
            "group": group,
            "consumers": [
                {
                    "name": c.name,
                    "pending": c.pending,
                    "idle_seconds": c.idle_ms / 1000,
                    "inactive_seconds": None if c.inactive_ms is None else c.inactive_ms / 1000,
                }
                for c in self.consumers
            ],
            "scheduler": self._scheduler_json(),
            "dlq": {"key": Keys.DLQ, **self.dlq.as_dict()},
            "batch_lane": {"severities": list(self.lane_severities), **self.lane.as_json(self.now)},
            "rate_limits": {
                "tenants": self.rate_limits.tenants,
                "truncated": self.rate_limits.truncated,
                "busiest": [asdict(b) for b in self.rate_limits.busiest],
            },
        }

    def waiting_ages(self) -> dict[str, float | None]:
        """Seconds the oldest waiting event of each severity has waited (None: none)."""
        stats = self.scheduler
        if stats is None:
            return {}
        return {
            severity: None if since is None else max(0.0, self.now - since)
            for severity, since in stats.oldest.items()
        }

    def _scheduler_json(self) -> dict[str, Any] | None:
        stats = self.scheduler
        if stats is None:
            return None
        ages = self.waiting_ages()
        return {
            "event_order": self.event_order,
            "waiting": {
                severity: {"events": count, "oldest_wait_seconds": ages[severity]}
                for severity, count in stats.waiting.items()
            },
            "running": stats.running,
            "retry_later": stats.later,
            "top_tenants": [{"tenant_id": t, "waiting": n} for t, n in stats.top_tenants],
        }


async def collect_status(
    settings: Settings, redis: RedisClient, *, top: int = 10, dlq_scan: int = 10_000
) -> StatusReport:
    stream, group_name = settings.insight_stream, settings.insight_group
    group = await inspect.group_info(redis, stream, group_name)
    return StatusReport(
        redis=redis_address(settings),
        stream=stream,
        stream_length=await inspect.stream_length(redis, stream),
        group_name=group_name,
        group=group,
        oldest_pending=await inspect.oldest_pending(redis, stream, group_name) if group else None,
        consumers=await inspect.consumers(redis, stream, group_name) if group else [],
        dlq=await inspect.dlq_summary(redis, max_letters=dlq_scan),
        rate_limits=await inspect.rate_limits(redis, top=top),
        lane_severities=tuple(sorted(s.value for s in settings.groq_batch_severities)),
        lane=await RedisLaneStore(redis).summary(),
        event_order=settings.event_order.value,
        scheduler=await waiting_stats(redis, top=top)
        if settings.redis_mode is RedisMode.STANDALONE
        else None,
        now=time.time(),
    )


def _number(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def render(report: StatusReport, console: Console) -> None:
    """The report as tables, for a person at a terminal."""
    console.print(f"[bold]Stream[/bold] {report.stream} on {report.redis}")
    overview = Table(show_header=False, box=None, pad_edge=False)
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("length", _number(report.stream_length))
    group = report.group
    if report.kafka is not None:
        overview.add_row("group", "not read: INBOUND=kafka (the Kafka group is above)")
    elif group is None:
        overview.add_row("group", f"[red]{report.group_name} does not exist[/red]")
    else:
        overview.add_row("group", group.name)
        overview.add_row("lag (not yet delivered)", _number(group.lag))
        overview.add_row("pending (delivered, not acked)", _number(group.pending))
        oldest = report.oldest_pending
        if oldest is not None:
            overview.add_row(
                "oldest pending",
                f"{oldest.entry_id}: {format_duration(oldest.age_ms)} old, on "
                f"{oldest.consumer}, delivered {oldest.deliveries}x, last "
                f"{format_duration(oldest.idle_ms)} ago",
            )
    overview.add_row("waiting (scheduler)", _waiting_line(report))
    overview.add_row("dead letters", _number(report.dlq.size))
    overview.add_row("batch lane", _lane_line(report))
    console.print(overview)

    stats = report.scheduler
    if stats is not None and stats.top_tenants:
        title = f"Tenants with the most waiting ({len(stats.top_tenants)})"
        tenants = Table(title=title, title_justify="left")
        tenants.add_column("tenant")
        tenants.add_column("waiting", justify="right")
        for tenant, count in stats.top_tenants:
            tenants.add_row(tenant, f"{count:,}")
        console.print(tenants)

    if group is not None:
        consumers = Table(title=f"Consumers ({len(report.consumers)})", title_justify="left")
        consumers.add_column("consumer")
        consumers.add_column("pending", justify="right")
        consumers.add_column("idle", justify="right")
        for consumer in report.consumers:
            consumers.add_row(
                consumer.name, f"{consumer.pending:,}", format_duration(consumer.idle_ms)
            )
        console.print(consumers)

    if report.dlq.size:
        scanned = report.dlq.scanned
        title = f"Dead letters by reason ({Keys.DLQ}, newest {scanned:,} of {report.dlq.size:,})"
        reasons = Table(title=title, title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("letters", justify="right")
        for reason, count in report.dlq.reasons.items():
            reasons.add_row(reason, f"{count:,}")
        console.print(reasons)

    limits = report.rate_limits
    if limits.busiest:
        title = f"Busiest tenants this hour ({len(limits.busiest)} of {limits.tenants:,})"
        budgets = Table(title=title, title_justify="left")
        budgets.add_column("tenant")
        budgets.add_column("enrichments", justify="right")
        budgets.add_column("resets in", justify="right")
        for budget in limits.busiest:
            resets = None if budget.ttl_seconds is None else budget.ttl_seconds * 1000
            budgets.add_row(budget.tenant_id, f"{budget.used:,}", format_duration(resets))
        console.print(budgets)


def _waiting_line(report: StatusReport) -> str:
    stats = report.scheduler
    if stats is None:
        return "no scheduler (REDIS_MODE=cluster)"
    ages = report.waiting_ages()
    parts = []
    for severity, count in stats.waiting.items():
        age = ages[severity]
        oldest = f" (oldest {format_duration(age * 1000)})" if age is not None else ""
        parts.append(f"{severity} {count:,}{oldest}")
    text = ", ".join(parts) + f"; running {stats.running:,}; retry later {stats.later:,}"
    return f"{text} [EVENT_ORDER={report.event_order}]"


def _lane_line(report: StatusReport) -> str:
    lane = report.lane
    if not report.lane_severities and not lane.waiting and not lane.batches:
        return "off (GROQ_BATCH_SEVERITIES is empty)"
    severities = ",".join(report.lane_severities) or "none here (GROQ_BATCH_SEVERITIES)"
    text = f"{severities}: {lane.waiting:,} waiting"
    if lane.oldest_recorded_at is not None:
        age = (report.now - lane.oldest_recorded_at) * 1000
        text += f" (oldest {format_duration(age)})"
    states = Counter(batch.state.value for batch in lane.batches)
    if states:
        text += "; batches " + ", ".join(f"{state} {n}" for state, n in states.items())
    return text


def _status(args: argparse.Namespace) -> int:
    async def work(settings: Settings, redis: RedisClient) -> StatusReport:
        report = await collect_status(settings, redis, top=args.top, dlq_scan=args.dlq_scan)
        if settings.inbound is Inbound.KAFKA:
            report = replace(report, kafka=await collect_kafka_lag(settings))
        return report

    code, report = run_with_redis("status", work)
    if report is None:
        return code
    if args.as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        if report.kafka is not None:
            render_kafka_lag(report.kafka, console)
        render(report, console)
    if report.kafka is not None:  # the group that matters is Kafka's
        if report.kafka.problem:
            print(f"groq-worker status: {report.kafka.problem}", file=sys.stderr)
            return EXIT_PROBLEM
        return EXIT_OK
    if report.group is None:
        print(
            f"groq-worker status: consumer group {report.group_name} does not exist on "
            f"{report.stream}",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="stream length, group lag and pending, consumers, waiting events, DLQ, "
        "busiest tenants",
        description="Show the worker's state in Redis (REDIS_URL, INSIGHT_STREAM, "
        "INSIGHT_GROUP). Exits 1 when the consumer group does not exist or Redis cannot "
        "be reached.",
    )
    parser.add_argument(
        "--json", dest="as_json", action="store_true", help="print JSON for scripts"
    )
    parser.add_argument(
        "--top",
        type=at_least(1),
        default=10,
        help="tenants to list by budget used and by events waiting (10)",
    )
    parser.add_argument(
        "--dlq-scan",
        type=at_least(1),
        default=10_000,
        metavar="N",
        help="newest dead letters read to count reasons (10000)",
    )
    parser.set_defaults(handler=_status)
