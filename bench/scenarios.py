"""What the benchmark measures: the implementations, one measurement's ``Spec``, and the
measurements each scenario (``overhead``, ``latency``, ``memory``) runs in a round.

The implementations are started as a user would start them: the worker under test
(``faststream run app:app``) and the two baselines, ``bench.baseline_bare`` (redis-py + groq
SDK, no framework) and ``bench.baseline_faststream`` (the docs-style FastStream app).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

BIN = Path(sys.executable).parent

IMPLEMENTATIONS = {
    "worker": [str(BIN / "faststream"), "run", "app:app"],
    "bare": [sys.executable, "-m", "bench.baseline_bare"],
    "naive": [str(BIN / "faststream"), "run", "bench.baseline_faststream:app"],
}


# -- what one measurement is ---------------------------------------------------------------


@dataclass
class Spec:
    scenario: str
    impl: str
    events: int
    latency: float = 0.0
    concurrency: int = 64
    log_level: str = "INFO"
    transport: str = "aiohttp"
    time_cap: float | None = None  # stop measuring after this many seconds of draining
    profile: bool = False
    fake: str = "lean"
    extra: bool = False  # a side variant, measured in the first round only
    processes: int = 1  # worker only: `faststream run app:app --workers N`
    redis_mode: str = "standalone"  # or "cluster" (python -m bench --redis-mode cluster)
    code: str = ""  # worker only: the git revision measured (--against), "" for the tree
    arrival_rate: float = 0.0  # steady: events written per second while it runs (0: preloaded)
    otel: bool = False  # worker only: tracing on, every event sampled, exported to a sink

    @property
    def variant(self) -> str:
        parts = [f"{self.impl}@{self.code}" if self.code else self.impl]
        if self.impl != "naive":  # events in flight in all (each of N processes: 1/N)
            parts.append(f"c{self.concurrency * self.processes}")
        if self.processes > 1:
            parts.append(f"p{self.processes}")
        if self.log_level != "INFO":
            parts.append(self.log_level.lower())
        if self.transport != "aiohttp":
            parts.append(self.transport)
        if self.fake != "lean":
            parts.append(f"{self.fake}-fake")
        if self.redis_mode != "standalone":
            parts.append(self.redis_mode)
        if self.arrival_rate:
            parts.append(f"{self.arrival_rate:g}ev/s")
        if self.otel:
            parts.append("otel")
        return "/".join(parts)

    @property
    def ideal_rate(self) -> float | None:
        if self.latency <= 0:
            return None
        slots = 1 if self.impl == "naive" else self.concurrency * self.processes
        return slots / self.latency


# -- scenarios -----------------------------------------------------------------------------


def scenario_specs(
    name: str, impls: list[str], quick: bool, args: argparse.Namespace
) -> list[Spec]:
    """The measurements of one round of a scenario (run in this order, each round)."""
    specs: list[Spec] = []
    if name == "overhead":
        n = args.events or (1000 if quick else 3000)
        for impl in impls:
            specs.append(Spec("overhead", impl, n, 0.0, 64))
        if not quick:
            for impl in impls:
                if impl != "naive":
                    specs.append(
                        Spec("overhead", impl, n, 0.0, 64, log_level="WARNING", extra=True)
                    )
            if "bare" in impls:
                specs.append(Spec("overhead", "bare", n, 0.0, 64, transport="httpx", extra=True))
    elif name == "latency":
        target = 5.0 if quick else args.latency_seconds
        most = 600 if quick else args.latency_max_events
        latency = args.latency
        for concurrency in (64, 256):
            for impl in impls:
                if impl == "naive":
                    continue
                n = max(100, min(most, int(concurrency / latency * target)))
                specs.append(Spec("latency", impl, n, latency, concurrency))
        if "naive" in impls:
            specs.append(Spec("latency", "naive", max(20, int(target / latency)), latency, 1))
    elif name == "steady":
        # No backlog: events arrive at a steady rate under what the worker can do (a 0 ms
        # model), so each finds a free slot; CPU and round trips per event are compared.
        n = args.events or (3000 if quick else 15000)
        for impl in impls:
            if impl != "naive":
                specs.append(Spec("steady", impl, n, 0.0, 64, arrival_rate=args.arrival_rate))
    elif name == "memory":
        n = args.events or (20_000 if quick else 200_000)
        cap = 15.0 if quick else args.memory_seconds
        for impl in impls:
            specs.append(Spec("memory", impl, n, 0.0, 64, time_cap=cap))
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    if getattr(args, "otel", False):  # beside each plain worker run: the same, traced
        specs = [
            variant
            for spec in specs
            for variant in (
                [spec, replace(spec, otel=True)]
                if spec.impl == "worker" and not spec.extra
                else [spec]
            )
        ]
    for spec in specs:
        spec.fake = args.fake
        spec.redis_mode = args.redis_mode
    against = getattr(args, "against", None)
    if against:  # each worker measurement again, on the code of that revision, next to it
        paired: list[Spec] = []
        for spec in specs:
            paired.append(spec)
            if spec.impl == "worker" and not spec.otel:  # a revision may not trace at all
                paired.append(replace(spec, code=against))
        specs = paired
    if args.worker_processes > 1:
        # The same concurrency in all (the ideal unchanged), spread over the processes.
        for spec in specs:
            if spec.impl == "worker" and spec.concurrency % args.worker_processes == 0:
                spec.processes = args.worker_processes
                spec.concurrency //= args.worker_processes
    return specs
