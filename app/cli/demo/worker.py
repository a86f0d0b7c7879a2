"""The demo's own worker: the settings it runs with, and what its metrics counted.

The worker itself is the real one (``build_worker``), started in this process as consumer
``demo`` by ``app.cli.demo.session``; this module decides its settings (the model, the
budget, the batch lane, its log level) and reads its counters for the summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from app.adapters.redis_clients import RedisClient
from app.bootstrap import Worker
from app.cli.demo.events import SampleEntry, budget_for_one_over
from app.domain.insights import Outcome
from app.domain.keys import Keys
from app.domain.scheduling import EventOrder
from app.settings import LLMProvider, RedisMode, Settings, load_settings

__all__ = [
    "AUTO_BUDGET",
    "CONSUMER",
    "batches_submitted",
    "budget_for",
    "outcome_count",
    "token_counts",
    "worker_settings",
]

CONSUMER = "demo"
AUTO_BUDGET = -1  # --budget without a number: the budget that puts one event over it


async def budget_for(
    redis: RedisClient, requested: int | None, entries: Sequence[SampleEntry]
) -> int | None:
    """The budget the worker gets: --budget N, the one --budget alone asks for, or none."""
    if requested != AUTO_BUDGET:
        return int(requested) if requested is not None else None
    tenants = sorted({entry.tenant_id for entry in entries})
    spent = await redis.mget([Keys.rate_limit(tenant) for tenant in tenants])
    used = {tenant: int(v or 0) for tenant, v in zip(tenants, spent, strict=True)}
    return budget_for_one_over(entries, used)[0]


def worker_settings(
    options: argparse.Namespace, settings: Settings, redis_url: str, budget: int | None
) -> Settings:
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_mode": settings.redis_mode,
        "worker_id": CONSUMER,
        "metrics_port": settings.metrics_port if options.keep_running else 0,
        "log_level": "INFO" if options.verbose else "WARNING",
        "log_format": "console",
    }
    # Groq needs a key; an OpenAI-compatible server (a local model) is never the default,
    # so it was asked for. Anything else runs offline.
    provider = settings.llm_provider
    ready = provider is LLMProvider.OPENAI_COMPATIBLE or (
        provider is LLMProvider.GROQ and settings.groq_api_key is not None
    )
    if settings.redis_mode is RedisMode.CLUSTER:  # the scheduler does not run in a cluster
        overrides["event_order"] = EventOrder.FIFO
    if options.offline or not ready:
        overrides["llm_provider"] = LLMProvider.OFFLINE
    if budget is not None:
        overrides["insight_budget_per_hour_per_tenant"] = budget
    if options.batch:  # low events wait for a batch, submitted within a second or so
        overrides |= {
            "groq_batch_severities": "low",
            "groq_batch_max_wait_seconds": 1.0,
            "groq_batch_poll_seconds": 0.5,
        }
    return load_settings(**overrides)


def outcome_count(worker: Worker, outcome: Outcome) -> int:
    """Entries of this worker that ended with ``outcome`` (acp_groq_events_consumed_total)."""
    value = worker.metrics.registry.get_sample_value(
        "acp_groq_events_consumed_total", {"result": outcome.value}
    )
    return int(value or 0)


def token_counts(worker: Worker) -> tuple[int, int, int]:
    """Tokens of the run: prompt, the cached part of the prompt, completion."""
    totals = dict.fromkeys(("prompt", "cached", "completion"), 0.0)
    for metric in worker.metrics.llm_tokens.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["kind"] in totals:
                totals[sample.labels["kind"]] += sample.value
    prompt, cached, completion = (int(totals[k]) for k in ("prompt", "cached", "completion"))
    return prompt, cached, completion


def batches_submitted(worker: Worker) -> int:
    """Batches this worker submitted to the Batch API."""
    return int(worker.metrics.batches_submitted._value.get())
