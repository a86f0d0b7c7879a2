"""``groq-worker demo``: the worker end to end in one command, with nothing else installed.

1. Redis: the one at ``REDIS_URL`` if it answers, otherwise a private ``redis-server`` (or
   the ``valkey-server`` of the ``demo`` extra) started for the run on a free loopback port
   and stopped at its end (``app.cli.demo.server``).
2. The real worker app (``build_worker``), started in this process as consumer ``demo``,
   with the offline model unless ``GROQ_API_KEY`` is set, its logs at WARNING so that the
   terminal shows the demo's own output.
3. A realistic sample of gateway events (``app.cli.demo.events``), written the way a gateway
   writes them: ``XADD <INSIGHT_STREAM> * payload '<json>'``.
4. Progress until the group has acknowledged every entry, then the insights as a table,
   the outcome counts of the worker's metric and where each key lives.

``--publish-only`` does steps 3 and 4 against a worker that runs elsewhere (the producer of
``deploy/docker-compose.yml``). Exits 0 once every entry reached an outcome, 1 if they did
not within ``--timeout``, Redis failed or no server could be started, 2 for a bad setting,
130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP before the end. ``--keep-running`` leaves
the worker and the Redis up for ``groq-worker status`` until Ctrl-C or SIGTERM (then 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from app.adapters import inspect
from app.adapters.dlq import parse_letter
from app.adapters.redis_clients import RedisClient, connect_redis
from app.adapters.redis_lane import RedisLaneStore
from app.adapters.redis_replies import as_text
from app.bootstrap import Worker, build_worker
from app.cli._common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, at_least
from app.cli.demo.events import (
    MIN_EVENTS,
    EntryKind,
    SampleEntry,
    sample_events,
)
from app.cli.demo.model import DemoRun, EventResult
from app.cli.demo.redis_choice import address, choose_redis
from app.cli.demo.server import ServerUnavailable
from app.cli.demo.worker import (
    AUTO_BUDGET,
    batches_submitted,
    budget_for,
    outcome_count,
    token_counts,
    worker_settings,
)
from app.cli.lost_cancel import raise_lost_cancel
from app.domain.insights import DeadLetter, Outcome
from app.domain.keys import Keys
from app.domain.retention import StreamId
from app.settings import LLMProvider, RedisMode, Settings, SettingsError, load_settings

__all__ = ["register"]

EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP end with 128 + their number

DEFAULT_EVENTS = 20
MAX_EVENTS = 100_000
DEFAULT_TIMEOUT_SECONDS = 60.0
TABLE_ROWS = 50  # insights listed; the outcome counts cover every entry
POLL_SECONDS = 0.1
NARROWEST_OUTPUT = 140  # columns, when stdout is not a terminal (a log, a pipe)

_STYLE = {
    Outcome.ENRICHED: "green",
    Outcome.DUPLICATE: "cyan",
    Outcome.RATE_LIMITED: "yellow",
    Outcome.DEAD_LETTERED: "red",
}
_MEANING = {
    Outcome.ENRICHED: "insight written, entry acked",
    Outcome.DUPLICATE: "event already enriched: acked, nothing rewritten, no model call",
    Outcome.RATE_LIMITED: "tenant over its hourly budget: acked, no insight, no dead letter",
    Outcome.DEAD_LETTERED: "pushed on the DLQ with its reason, then acked",
}


# -- small helpers ----------------------------------------------------------------------


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _per_name(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts)


def _short_model(model: str) -> str:
    """``offline/openai/gpt-oss-20b`` -> ``offline/gpt-oss-20b``; vendor prefixes go."""
    parts = model.split("/")
    return f"offline/{parts[-1]}" if parts[0] == "offline" and len(parts) > 1 else parts[-1]


def _tokens(worker: Worker) -> str:
    """Tokens of the run by kind: the cached part of the prompts is the prompt cache's saving."""
    prompt, cached, completion = token_counts(worker)
    share = f" ({cached * 100 // prompt}% of prompt tokens)" if prompt else ""
    return (
        f"Tokens: prompt {prompt:,}, of which cached {cached:,}{share}; completion {completion:,}"
    )


def _tally(worker: Worker | None) -> str:
    if worker is None:
        return ""
    counts = ((outcome, outcome_count(worker, outcome)) for outcome in Outcome)
    return "  ".join(f"[{_STYLE[o]}]{o.value} {n}[/]" for o, n in counts if n)


# -- the steps --------------------------------------------------------------------------


async def _publish(redis: RedisClient, stream: str, entries: Sequence[SampleEntry]) -> list[str]:
    """XADD every entry in the gateway's wire format; their entry ids, in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.xadd(stream, entry.fields)  # type: ignore[arg-type]
        ids = await pipe.execute()
    return [as_text(entry_id) for entry_id in ids]


async def _entries_done(redis: RedisClient, settings: Settings, entry_ids: Sequence[str]) -> int:
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


async def _follow(redis: RedisClient, run: DemoRun, console: Console, within: float) -> bool:
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
            done = await _entries_done(redis, run.settings, run.entry_ids)
            settled = done >= total and await _lane_settled(redis, run)
            raise_lost_cancel()
            progress.update(task, completed=done, outcomes=_tally(run.worker))
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
        progress.update(task, description="processed", outcomes=_tally(run.worker))
    return True


async def _results(redis: RedisClient, run: DemoRun) -> list[EventResult]:
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


# -- what the terminal shows ------------------------------------------------------------


def _print_header(console: Console, run: DemoRun, redis_text: str) -> None:
    settings = run.settings
    console.print("[bold]acp-groq-worker demo[/bold]")
    console.print(f"  Redis   {redis_text}", soft_wrap=True)
    if run.server is not None:
        console.print(
            f"  Server  pid {run.server.pid} in {run.server.directory}, nothing saved: "
            "stopped and removed when the demo ends",
            soft_wrap=True,  # a path to copy stays whole
        )
    if run.worker is None:
        console.print(
            f"  Worker  the one consuming {settings.insight_stream} as group "
            f"{settings.insight_group} (not started here: --publish-only)"
        )
    else:
        models = f"{settings.groq_model_fast} (fast), {settings.groq_model_deep} (deep)"
        if settings.llm_provider is LLMProvider.OFFLINE:
            model = "offline: insights derived from the prompt, no network"
            model += " (set GROQ_API_KEY for Groq)" if settings.groq_api_key is None else ""
        elif settings.llm_provider is LLMProvider.OPENAI_COMPATIBLE:
            model = f"openai-compatible at {settings.llm_base_url}: {models}"
        else:
            model = f"groq: {models}"
        console.print(f"  Model   {model}")
        console.print(
            f"  Worker  consumer {settings.worker_id} of group {settings.insight_group} on "
            f"{settings.insight_stream}, budget {run.budget} enrichments per tenant an hour"
        )
    kinds = Counter(entry.kind for entry in run.entries)
    tenants = {entry.tenant_id for entry in run.entries}
    agents = {entry.agent_id for entry in run.entries}
    console.print(
        f"  Events  {len(run.entries)} sample entries (run {run.run_id}): "
        f"{len(tenants)} tenants, {len(agents)} agents, every severity, "
        f"{kinds[EntryKind.INVALID]} invalid, {kinds[EntryKind.DUPLICATE]} written twice"
    )


def _insight_cell(result: EventResult, run: DemoRun) -> str:
    if result.record is not None:
        insight = result.record.get("insight") or {}
        text = f"[bold]{insight.get('risk', '?')}[/]: {insight.get('summary', '')}"
        if len(result.entry_ids) > 1:
            text += f" [cyan](written {len(result.entry_ids)}x: the repeat was a duplicate)[/]"
        return text
    if result.letter is not None:
        return f"[red]{result.letter.reason}[/]: {result.letter.error}"
    budget = f" of {run.budget}" if run.budget is not None else ""
    return f"over the tenant's hourly budget{budget}: acked, no insight, no dead letter"


def _insights_table(results: Sequence[EventResult], run: DemoRun) -> Table:
    shown = results[:TABLE_ROWS]
    title = f"Insights ({len(results)} events from {len(run.entry_ids)} entries"
    title += f", the first {len(shown)} shown)" if len(shown) < len(results) else ")"
    table = Table(title=title, title_justify="left")
    for name in ("event", "tenant", "agent", "severity", "outcome", "model"):
        table.add_column(name, no_wrap=True)
    table.add_column("insight (risk: summary), or why there is none", ratio=1)
    for result in shown:
        entry, outcome = result.entry, result.outcome
        model = _short_model(str(result.record.get("model", ""))) if result.record else "-"
        if result.record and result.record.get("lane") == "batch":
            model += " [magenta](batch)[/]"
        table.add_row(
            entry.event_id,
            entry.tenant_id,
            entry.agent_id,
            entry.severity,
            f"[{_STYLE[outcome]}]{outcome.value}[/]",
            model,
            _insight_cell(result, run),
        )
    return table


def _outcomes_table(worker: Worker) -> Table:
    table = Table(
        title="Outcomes (acp_groq_events_consumed_total of this worker)", title_justify="left"
    )
    table.add_column("result", no_wrap=True)
    table.add_column("entries", justify="right")
    table.add_column("meaning")
    for outcome in Outcome:
        table.add_row(
            f"[{_STYLE[outcome]}]{outcome.value}[/]",
            str(outcome_count(worker, outcome)),
            _MEANING[outcome],
        )
    return table


async def _keys_table(redis: RedisClient, run: DemoRun, results: Sequence[EventResult]) -> Table:
    settings = run.settings
    tenants = sorted({r.entry.tenant_id for r in results})
    agents = sorted({r.entry.agent_id for r in results})
    enriched = [r.entry.event_id for r in results if r.record is not None]
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
    group_text = (
        f"lag {group.lag}, pending {group.pending} of {inbound} gateway entries "
        f"(group {group.name})"
        if group
        else f"{inbound} gateway entries, no group {settings.insight_group}"
    )
    example = Keys.insight(enriched[0]) if enriched else "none"
    budget = f" (budget {run.budget} an hour)" if run.budget is not None else ""

    where = f"Where it lives: Redis at {address(run.redis_url)}"
    kind = run.server.name if run.server else ""
    if run.server and run.settings.redis_mode is RedisMode.CLUSTER:
        kind = f"Redis Cluster of {kind} primaries, seed node"
    own = f" (the demo's own {kind}, nothing saved)" if run.server else ""
    table = Table(title=where + own)
    table.title_justify = "left"
    table.add_column("key", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("now holds")
    table.add_row(settings.insight_stream, "STREAM", group_text)
    table.add_row(
        Keys.insight("{event_id}"),
        "STRING, JSON, TTL 24 h",
        f"{len(enriched)} insights of this run, e.g. {example}",
    )
    table.add_row(Keys.TIMELINE, "ZSET", f"{timeline} event ids, scored by event time")
    table.add_row(
        Keys.by_tenant("{tenant_id}"),
        "ZSET",
        _per_name(zip(tenants, by_tenant, strict=True)),
    )
    table.add_row(
        Keys.by_agent("{agent_id}"),
        "LIST",
        _per_name(zip(agents, by_agent, strict=True)),
    )
    table.add_row(Keys.INSIGHTS_STREAM, "STREAM", f"{created} InsightCreated messages")
    table.add_row(Keys.DLQ, "LIST", f"{_plural(letters, 'dead letter')} (groq-worker dlq list)")
    table.add_row(
        Keys.rate_limit("{tenant_id}"),
        "counter, 1 h",
        _per_name(zip(tenants, spent, strict=True)) + budget,
    )
    return table


def _print_footer(console: Console, run: DemoRun, *, keep_running: bool) -> None:
    if keep_running and run.worker is not None:
        operations = run.worker.operations
        also = f" and the demo's {run.server.name}" if run.server is not None else ""
        console.print(
            f"\nThe worker keeps running as consumer {run.settings.worker_id}; Ctrl-C stops "
            f"it{also}. In another terminal:"
        )
        console.print(f"  REDIS_URL={run.redis_url} groq-worker status")
        console.print(f"  REDIS_URL={run.redis_url} groq-worker dlq list")
        if operations is not None and operations.port is not None:
            console.print(f"  curl http://127.0.0.1:{operations.port}/metrics   (/health/ready)")
    elif run.server is not None:
        servers = (
            "Redis Cluster" if run.settings.redis_mode is RedisMode.CLUSTER else run.server.name
        )
        console.print(
            f"\nThe demo's {servers} stopped with it and its directory is gone; "
            "`groq-worker demo --keep-running` leaves both up to look around."
        )


# -- the command ------------------------------------------------------------------------


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _end_on_termination(received: list[signal.Signals]) -> None:
    """SIGTERM and SIGHUP cancel the run (noted in ``received``), so what it started stops.

    Ctrl-C does so already (``asyncio.run`` cancels the main task on SIGINT). Without
    this, SIGTERM would end the process at once and leave its server running.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def cancel(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, cancel, sig)


async def _run(
    options: argparse.Namespace,
    settings: Settings,
    console: Console,
    received: list[signal.Signals],
) -> int:
    _end_on_termination(received)
    async with contextlib.AsyncExitStack() as stack:
        configured = str(settings.redis_url)
        chosen = await choose_redis(options, configured, settings.redis_mode, stack)
        if chosen is None:
            print(
                f"groq-worker demo: nothing answers at {address(configured)} (REDIS_URL); "
                "--publish-only needs the Redis that a worker reads",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        settings = settings.model_copy(update={"redis_mode": chosen.mode})
        redis_url, server, redis_text = chosen.url, chosen.server, chosen.description

        redis = connect_redis(
            redis_url, settings.redis_mode, socket_connect_timeout=5.0, socket_timeout=10.0
        )
        stack.push_async_callback(redis.aclose)
        run_id = secrets.token_hex(2)
        entries = sample_events(options.events, run_id=run_id, now=time.time())
        run = DemoRun(settings, redis_url, server, run_id, entries)

        if not options.publish_only:
            budget = await budget_for(redis, options.budget, run.entries)
            run.settings = worker_settings(options, settings, redis_url, budget)
            run.worker = build_worker(run.settings, lane_tick_seconds=0.2)
        _print_header(console, run, redis_text)
        if run.worker is not None:
            await run.worker.app.start()
            stack.push_async_callback(run.worker.app.stop)
        # A Ctrl-C that met a Redis reply is lost under Python 3.11: raised here, after each
        # step that talks to Redis (and in _follow's loop), instead of never.
        raise_lost_cancel()
        run.entry_ids = await _publish(redis, run.settings.insight_stream, entries)
        raise_lost_cancel()
        finished = await _follow(redis, run, console, options.timeout)
        if not finished:
            done = await _entries_done(redis, run.settings, run.entry_ids)
            console.print(
                f"[red]{done} of {len(run.entry_ids)} entries reached an outcome within "
                f"{options.timeout:g} s[/red]; `groq-worker status` shows what is pending."
            )
        results = await _results(redis, run)
        console.print(_insights_table(results, run))
        if run.worker is not None:
            console.print(_outcomes_table(run.worker))
            console.print(_tokens(run.worker))
            if run.settings.groq_batch_severities:
                batched = sum(1 for r in results if r.record and r.record.get("lane") == "batch")
                submitted = batches_submitted(run.worker)
                console.print(
                    f"Batch lane: {batched} insight(s) answered through "
                    f"{submitted} batch(es) of the Batch API (model column: (batch))"
                )
        console.print(await _keys_table(redis, run, results))
        keep_running = options.keep_running and finished and run.worker is not None
        _print_footer(console, run, keep_running=keep_running)
        if keep_running:
            await _wait_for_stop()
        return EXIT_OK if finished else EXIT_PROBLEM
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the stack may suppress)


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # a log or a pipe: wide enough for the tables' rows
        console.width = max(console.width, NARROWEST_OUTPUT)
    return console


def _demo(options: argparse.Namespace) -> int:
    if options.publish_only and (options.budget is not None or options.keep_running):
        print(
            "groq-worker demo: --budget and --keep-running need the worker of the demo, "
            "not --publish-only",
            file=sys.stderr,
        )
        return EXIT_USAGE
    clash = [name for name in ("publish_only", "own_redis", "batch") if getattr(options, name)]
    if options.cluster and clash:
        flags = ", ".join("--" + name.replace("_", "-") for name in clash)
        print(
            f"groq-worker demo: --cluster starts a cluster of its own for the demo's worker; "
            f"not with {flags} (the batch lane does not run in cluster mode)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    received: list[signal.Signals] = []
    try:
        return asyncio.run(_run(options, settings, _console(), received))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM or SIGHUP: see _end_on_termination
        return 128 + int(received[0]) if received else EXIT_INTERRUPTED
    except ServerUnavailable as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except SettingsError as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RedisError, OSError) as exc:
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(
            f"groq-worker demo: Redis at {address(str(settings.redis_url))} failed "
            f"({problem}); `groq-worker demo --own-redis` runs on a Redis of its own",
            file=sys.stderr,
        )
        return EXIT_PROBLEM


# -- arguments --------------------------------------------------------------------------


def _event_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_EVENTS <= value <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {MIN_EVENTS} to {MAX_EVENTS}, got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the worker on sample events and show the insights (nothing to set up)",
        description="Start the worker on sample gateway events and show what it wrote. Uses "
        "the Redis at REDIS_URL when one answers there, otherwise starts redis-server (or the "
        "valkey-server of the demo extra) for the run; the "
        "offline model unless GROQ_API_KEY is set. Exits 0 once every event has an outcome.",
    )
    parser.add_argument(
        "--events",
        type=_event_count,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"sample entries to publish ({DEFAULT_EVENTS}; at least {MIN_EVENTS})",
    )
    parser.add_argument(
        "--budget",
        type=at_least(0),
        nargs="?",
        const=AUTO_BUDGET,
        default=None,
        metavar="N",
        help="INSIGHT_BUDGET_PER_HOUR_PER_TENANT of the demo's worker; --budget alone picks "
        "one that puts exactly one sample event over budget (rate_limited)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the worker (and the Redis the demo started) up for `groq-worker status`; "
        "Ctrl-C stops it",
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="start no worker: publish to the Redis at REDIS_URL for the worker that runs "
        "there, and show what it wrote",
    )
    parser.add_argument(
        "--own-redis",
        "--embedded",
        dest="own_redis",
        action="store_true",
        help="start a Redis of the demo's own even if one answers at REDIS_URL",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start a Redis Cluster of the demo's own (three primaries: redis-server and "
        "redis-cli on PATH) and run the worker on it with REDIS_MODE=cluster",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the offline model even if GROQ_API_KEY (or LLM_PROVIDER=openai-compatible) "
        "is set",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for every entry to reach an outcome ({DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="send low-severity events through the batch lane (GROQ_BATCH_SEVERITIES=low, a "
        "batch within about a second; the offline model answers batches at once, Groq's "
        "Batch API may take hours: add --offline)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the worker's log lines down to INFO"
    )
    parser.set_defaults(handler=_demo)
