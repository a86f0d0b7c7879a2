"""The data of one demo run: what it works with, and what became of each sample event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.bootstrap import Running, Worker
from app.cli.demo.events import SampleEntry
from app.cli.demo.server import LaunchedServer
from app.domain.insights import DeadLetter, Outcome
from app.settings import Settings

__all__ = ["DemoRun", "EventResult"]


@dataclass
class EventResult:
    """One sample event (its entries, if the gateway wrote it twice) and what became of it."""

    entry: SampleEntry
    entry_ids: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    letter: DeadLetter | None = None

    @property
    def outcome(self) -> Outcome:
        if self.record is not None:
            return Outcome.ENRICHED
        if self.letter is not None:
            return Outcome.DEAD_LETTERED
        # Acked and nothing written: the one outcome that leaves no trace but its counters.
        return Outcome.RATE_LIMITED


@dataclass
class DemoRun:
    """What this run works with: its Redis, the sample, and the worker if it runs here."""

    settings: Settings  # the worker's, or this process's with --publish-only
    redis_url: str
    server: LaunchedServer | None  # the server this run started, if it started one
    run_id: str
    entries: list[SampleEntry]
    worker: Worker | None = None
    live: Running | None = None  # what the worker runs, once started
    entry_ids: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int | None:
        """The worker's hourly budget per tenant, when the worker runs in this process."""
        return self.settings.insight_budget_per_hour_per_tenant if self.worker is not None else None
