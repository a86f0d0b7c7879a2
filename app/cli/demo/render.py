"""What the demo's terminal shows: the header, the outcome tally, the summary tables, the end.

Rendering only: the data comes from ``app.cli.demo.model``, ``app.cli.demo.readback`` and
the worker's counters (``app.cli.demo.worker``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from app.bootstrap import Worker
from app.cli.demo.events import EntryKind
from app.cli.demo.model import DemoRun, EventResult
from app.cli.demo.readback import KeyCounts
from app.cli.demo.redis_choice import address
from app.cli.demo.worker import batches_submitted, outcome_count, token_counts
from app.domain.insights import Outcome
from app.domain.keys import Keys
from app.settings import LLMProvider, RedisMode

__all__ = [
    "batch_lane_line",
    "insights_table",
    "keys_table",
    "outcomes_table",
    "print_footer",
    "print_header",
    "tally",
    "tokens_line",
]

TABLE_ROWS = 50  # insights listed; the outcome counts cover every entry

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


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _per_name(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts)


def _short_model(model: str) -> str:
    """``offline/openai/gpt-oss-20b`` -> ``offline/gpt-oss-20b``; vendor prefixes go."""
    parts = model.split("/")
    return f"offline/{parts[-1]}" if parts[0] == "offline" and len(parts) > 1 else parts[-1]


def tally(worker: Worker | None) -> str:
    """The worker's outcome counts so far, for the progress bar ("" without a worker here)."""
    if worker is None:
        return ""
    counts = ((outcome, outcome_count(worker, outcome)) for outcome in Outcome)
    return "  ".join(f"[{_STYLE[o]}]{o.value} {n}[/]" for o, n in counts if n)


def tokens_line(worker: Worker) -> str:
    """Tokens of the run by kind: the cached part of the prompts is the prompt cache's saving."""
    prompt, cached, completion = token_counts(worker)
    share = f" ({cached * 100 // prompt}% of prompt tokens)" if prompt else ""
    return (
        f"Tokens: prompt {prompt:,}, of which cached {cached:,}{share}; completion {completion:,}"
    )


def batch_lane_line(results: Sequence[EventResult], worker: Worker) -> str:
    batched = sum(1 for r in results if r.record and r.record.get("lane") == "batch")
    return (
        f"Batch lane: {batched} insight(s) answered through "
        f"{batches_submitted(worker)} batch(es) of the Batch API (model column: (batch))"
    )


def print_header(console: Console, run: DemoRun, redis_text: str) -> None:
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


def insights_table(results: Sequence[EventResult], run: DemoRun) -> Table:
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


def outcomes_table(worker: Worker) -> Table:
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


def keys_table(counts: KeyCounts, run: DemoRun, results: Sequence[EventResult]) -> Table:
    settings = run.settings
    enriched = [r.entry.event_id for r in results if r.record is not None]
    group = counts.group
    group_text = (
        f"lag {group.lag}, pending {group.pending} of {counts.inbound} gateway entries "
        f"(group {group.name})"
        if group
        else f"{counts.inbound} gateway entries, no group {settings.insight_group}"
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
    table.add_row(Keys.TIMELINE, "ZSET", f"{counts.timeline} event ids, scored by event time")
    table.add_row(Keys.by_tenant("{tenant_id}"), "ZSET", _per_name(counts.by_tenant.items()))
    table.add_row(Keys.by_agent("{agent_id}"), "LIST", _per_name(counts.by_agent.items()))
    table.add_row(Keys.INSIGHTS_STREAM, "STREAM", f"{counts.created} InsightCreated messages")
    table.add_row(
        Keys.DLQ, "LIST", f"{_plural(counts.letters, 'dead letter')} (groq-worker dlq list)"
    )
    table.add_row(
        Keys.rate_limit("{tenant_id}"), "counter, 1 h", _per_name(counts.spent.items()) + budget
    )
    return table


def print_footer(console: Console, run: DemoRun, *, keep_running: bool) -> None:
    if keep_running and run.live is not None:
        operations = run.live.operations
        also = f" and the demo's {run.server.name}" if run.server is not None else ""
        console.print(
            f"\nThe worker keeps running as consumer {run.settings.worker_id}; Ctrl-C stops "
            f"it{also}. In another terminal:"
        )
        console.print(f"  REDIS_URL={run.redis_url} groq-worker status")
        console.print(f"  REDIS_URL={run.redis_url} groq-worker dlq list")
        if operations.port is not None:
            console.print(f"  curl http://127.0.0.1:{operations.port}/metrics   (/health/ready)")
    elif run.server is not None:
        servers = (
            "Redis Cluster" if run.settings.redis_mode is RedisMode.CLUSTER else run.server.name
        )
        console.print(
            f"\nThe demo's {servers} stopped with it and its directory is gone; "
            "`groq-worker demo --keep-running` leaves both up to look around."
        )
