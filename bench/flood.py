"""The flood benchmark: how soon urgent events are answered behind a flood, and who is served.

``.venv/bin/python -m bench --scenario flood [--flood 100000] [--runs 1]
[--order priority,fifo] [--regime concurrency,rate] [--fifo-cap 90] [--json FILE]``
(``--quick``: a flood of 10,000)

For every regime and event order: a private ``redis-server``, the lean fake Groq
(``bench.lean_groq``) and the worker as users run it (``faststream run app:app``). The
flood is pre-loaded in the gateway's wire format: ``--flood`` events of one tenant
(``flood-co``), all ``low``, each the benchmark's full-size event (findings, metadata,
fields the prompt never carries). The worker starts; once it has answered some of the
flood (200; 1,300 in the rate regime: past the limiter's first minute, which it lets
through at once), the harness writes, in one pipeline, the events that matter:

* 20 urgent ones: 10 ``critical`` and 10 ``high``, from four other tenants;
* 20 ``low`` ones from a quiet tenant (``quiet-co``): the flood's severity, so only the
  fair share between tenants can serve them early.

From that moment the harness polls (every 20 ms) for their insights: an event's time to
insight is from the pipeline's write to the first poll that sees its insight key. It
stops when all 40 have insights, or after ``--fifo-cap`` seconds: with ``EVENT_ORDER=
fifo`` they come after the whole flood, which at the regime's pace takes far longer (the
line says how many were answered, and estimates the wait from the drain rate: entries
ahead of them / the flood's answers per second during the window). Each tenant's share is
of the insights written during that window (``acp:groq:insights:tenant:<t>``).

Regimes, as issue #23 describes them:

* ``concurrency``: the model answers in 250 ms, ``WORKER_CONCURRENCY=32`` (128 events/s);
* ``rate``: the shared rate limiter is the bottleneck: ``GROQ_RPM_LIMIT=1200`` (20 calls
  a second), a 50 ms model, and one model for every severity (``DEEP_SEVERITIES`` empty:
  with the default, urgent events go to the deep model, whose limit the flood does not use).

Every process is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as sync_redis

from app.domain.keys import Keys
from bench.common import STREAM, event_payload
from bench.driver import (
    RESULTS,
    ROOT,
    Fake,
    RedisUnderTest,
    loadavg,
    stop_process,
    worker_env,
)
from bench.report import machine
from bench.scenarios import IMPLEMENTATIONS

FLOOD_TENANT = "flood-co"
QUIET_TENANT = "quiet-co"
URGENT_TENANTS = ("acme", "globex", "initech", "umbrella")
POLL_SECONDS = 0.02

# ``warmup``: flood answers before the events that matter are written. In the rate regime
# that is past the limiter's first minute, which it lets through at once (1,200 calls).
REGIMES: dict[str, dict[str, Any]] = {
    "concurrency": {"latency": 0.25, "warmup": 200, "env": {"WORKER_CONCURRENCY": "32"}},
    "rate": {
        "latency": 0.05,
        "warmup": 1300,
        "env": {"WORKER_CONCURRENCY": "32", "GROQ_RPM_LIMIT": "1200", "DEEP_SEVERITIES": ""},
    },
}


@dataclass
class FloodRun:
    regime: str
    order: str
    flood: int
    ok: bool = False
    error: str | None = None
    urgent_seconds: list[float] = field(default_factory=list)  # of those answered
    quiet_seconds: list[float] = field(default_factory=list)
    urgent_answered: int = 0
    quiet_answered: int = 0
    window_s: float = 0.0
    flood_answered_in_window: int = 0
    shares: dict[str, float] = field(default_factory=dict)
    estimated_urgent_wait_s: float | None = None
    loadavg: str = ""


def _event(event_id: str, tenant: str, severity: str, n: int) -> str:
    """A full-size event (``bench.common.event_payload``) of this tenant and severity."""
    return event_payload(
        n,
        event_id=event_id,
        tenant_id=tenant,
        severity=severity,
        decision="deny",
        tool_name=_TOOLS[n % len(_TOOLS)],
    )


_TOOLS = ("shell.exec", "http.get", "fs.read", "sql.query")


def preload_flood(client: sync_redis.Redis, count: int) -> None:
    chunk = 5000
    for start in range(0, count, chunk):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + chunk, count)):
            pipe.xadd(STREAM, {"payload": _event(f"flood-{n:06d}", FLOOD_TENANT, "low", n)})
        pipe.execute()


def the_ones_that_matter() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(urgent, quiet): (event id, tenant, severity) of each."""
    urgent = [
        (f"urgent-{n:02d}", URGENT_TENANTS[n % 4], "critical" if n % 2 == 0 else "high")
        for n in range(20)
    ]
    quiet = [(f"quiet-{n:02d}", QUIET_TENANT, "low") for n in range(20)]
    return urgent, quiet


def answered(client: sync_redis.Redis, tenant: str) -> int:
    return int(client.zcard(Keys.by_tenant(tenant)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_one(regime: str, order: str, flood: int, cap: float, logs: Path) -> FloodRun:
    result = FloodRun(regime, order, flood, loadavg=loadavg())
    config = REGIMES[regime]
    server = RedisUnderTest("standalone")
    fake: Fake | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path = logs / f"flood-{regime}-{order}.log"
    try:
        server.start()
        fake = Fake(config["latency"], "lean")
        client = server.client()
        preload_flood(client, flood)
        env = worker_env(
            server.url,
            fake.url,
            "bench-flood",
            LOG_LEVEL="WARNING",
            INSIGHT_BUDGET_PER_HOUR_PER_TENANT="100000000",
            EVENT_ORDER=order,
            SHUTDOWN_TIMEOUT_SECONDS="2",
            **config["env"],
        )
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                IMPLEMENTATIONS["worker"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while answered(client, FLOOD_TENANT) < config["warmup"]:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited: {log_path.read_text()[-1500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the worker answered too little of the flood in 120 s")
            time.sleep(0.05)

        urgent, quiet = the_ones_that_matter()
        tenants = [FLOOD_TENANT, QUIET_TENANT, *URGENT_TENANTS]
        before = {tenant: answered(client, tenant) for tenant in tenants}
        pipe = client.pipeline(transaction=False)
        for n, (event_id, tenant, severity) in enumerate(urgent + quiet):
            pipe.xadd(STREAM, {"payload": _event(event_id, tenant, severity, flood + n)})
        pipe.execute()
        written = time.monotonic()
        seen: dict[str, float] = {}
        waiting = [event_id for event_id, _, _ in urgent + quiet]
        while waiting and time.monotonic() - written < cap:
            time.sleep(POLL_SECONDS)
            check = client.pipeline(transaction=False)
            for event_id in waiting:
                check.exists(Keys.insight(event_id))
            now = time.monotonic()
            for event_id, exists in zip(waiting, check.execute(), strict=True):
                if exists:
                    seen[event_id] = now - written
            waiting = [event_id for event_id in waiting if event_id not in seen]
        window = time.monotonic() - written
        after = {tenant: answered(client, tenant) for tenant in tenants}

        result.window_s = round(window, 2)
        result.urgent_seconds = [round(seen[e], 3) for e, _, _ in urgent if e in seen]
        result.quiet_seconds = [round(seen[e], 3) for e, _, _ in quiet if e in seen]
        result.urgent_answered = len(result.urgent_seconds)
        result.quiet_answered = len(result.quiet_seconds)
        calls = {tenant: after[tenant] - before[tenant] for tenant in tenants}
        total = sum(calls.values()) or 1
        result.shares = {tenant: round(count / total, 4) for tenant, count in calls.items()}
        result.flood_answered_in_window = calls[FLOOD_TENANT]
        if result.urgent_answered < len(urgent):
            # In the stream's order they come after what is left of the flood.
            rate = calls[FLOOD_TENANT] / window if window else 0.0
            left = flood - after[FLOOD_TENANT]
            result.estimated_urgent_wait_s = round(window + left / rate, 1) if rate else None
        result.ok = True
    except Exception as exc:  # reported; the other runs go on
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        stop_process(process, grace=5.0)
        if fake is not None:
            fake.stop()
        server.close()
    return result


def _seconds(values: list[float], q: float | None, total: int) -> str:
    if not values:
        return "-"
    text = f"{(max(values) if q is None else percentile(values, q)):.2f}"
    return text if len(values) == total else f"{text}*"


def render(runs: list[FloodRun], cap: float) -> str:
    lines = [
        "| regime | order | urgent answered | urgent p50 s | p99 s | max s | quiet answered "
        "| quiet max s | flood answered meanwhile | shares (flood / quiet / urgent tenants) "
        "| urgent wait if not answered |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for run in runs:
        if not run.ok:
            lines.append(f"| {run.regime} | {run.order} | FAILED: {run.error} |")
            continue
        shares = run.shares
        urgent_share = sum(shares.get(t, 0.0) for t in URGENT_TENANTS)
        estimate = (
            f"> {run.window_s:.0f} s measured; about {run.estimated_urgent_wait_s:,.0f} s "
            "from the drain rate"
            if run.estimated_urgent_wait_s is not None
            else "-"
        )
        lines.append(
            f"| {run.regime} | {run.order} | {run.urgent_answered}/20 "
            f"| {_seconds(run.urgent_seconds, 0.5, 20)} | {_seconds(run.urgent_seconds, 0.99, 20)} "
            f"| {_seconds(run.urgent_seconds, None, 20)} | {run.quiet_answered}/20 "
            f"| {_seconds(run.quiet_seconds, None, 20)} | {run.flood_answered_in_window:,} "
            f"| {shares.get(FLOOD_TENANT, 0):.1%} / {shares.get(QUIET_TENANT, 0):.1%} / "
            f"{urgent_share:.1%} | {estimate} |"
        )
    lines.append("")
    lines.append(
        f"Seconds from the write of the 40 events to their insights (polled every "
        f"{POLL_SECONDS * 1000:.0f} ms); * = of those answered within the {cap:.0f} s cap. "
        "Shares: of the insights written in that window."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench --scenario flood", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--flood", type=int, default=0, help="flood events (100000)")
    parser.add_argument("--quick", action="store_true", help="a flood of 10,000")
    parser.add_argument("--runs", type=int, default=1, help="rounds (each run is printed)")
    parser.add_argument("--order", default="priority,fifo", help="EVENT_ORDER values to compare")
    parser.add_argument("--regime", default="concurrency,rate", help="concurrency, rate")
    parser.add_argument(
        "--fifo-cap",
        type=float,
        default=90.0,
        help="seconds to wait for the 40 events before giving up (fifo serves them after "
        "the flood)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    flood = args.flood or (10_000 if args.quick else 100_000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="flood-logs-", dir=RESULTS))
    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu_model']}, load {loadavg()}", flush=True)
    runs: list[FloodRun] = []
    began = time.monotonic()
    for round_no in range(1, args.runs + 1):
        for regime in args.regime.split(","):
            for order in args.order.split(","):
                run = run_one(regime, order, flood, args.fifo_cap, logs)
                runs.append(run)
                urgent = run.urgent_seconds
                print(
                    f"[{time.monotonic() - began:5.0f}s] r{round_no} {regime:11} {order:8} "
                    f"urgent {run.urgent_answered}/20 p50 "
                    f"{statistics.median(urgent) if urgent else float('nan'):.2f}s max "
                    f"{max(urgent) if urgent else float('nan'):.2f}s quiet "
                    f"{run.quiet_answered}/20 shares {run.shares} "
                    f"{'ok' if run.ok else run.error}",
                    flush=True,
                )
    table = render(runs, args.fifo_cap)
    print(table)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or RESULTS / f"flood-{stamp}.json"
    command = " ".join(["python -m bench --scenario flood", *(argv or sys.argv[1:])])
    out.write_text(
        json.dumps(
            {"machine": info, "command": command, "runs": [asdict(run) for run in runs]},
            indent=2,
        )
    )
    out.with_suffix(".md").write_text(table + "\n")
    print(f"results: {out}")
    return 0 if all(run.ok for run in runs) else 1
