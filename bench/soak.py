"""The soak benchmark: one worker at about half its capacity for N minutes, sampled.

``.venv/bin/python -m bench.soak --minutes N [--latency 0.8] [--concurrency 32]
[--capacity EVENTS_PER_S] [--fraction 0.5] [--sample-seconds 5] [--warmup-seconds 30]
[--keep-entries 1000] [--json FILE]``

A private ``redis-server`` (no persistence), the loopback fake Groq
(``tests/support/fake_groq.py``, answering after ``--latency`` seconds) and the worker as
users run it (``faststream run app:app``, settings from the environment) are started.

1. **Capacity** (skipped with ``--capacity``): events are pre-loaded into database 1 and a
   first worker process drains them; capacity = events acknowledged / seconds from its
   first read to the group settled (lag 0, nothing pending). That process is then stopped.
2. **Soak**: a fresh worker on database 0, and a steady producer writing
   ``--fraction`` x capacity events per second in the gateway's wire format
   (``XADD acp:groq_queue * payload <json>``, the event's ``timestamp`` = the time of the
   XADD) for ``--minutes``. Every ``--sample-seconds`` the harness records the worker's RSS
   (``VmRSS``), the end-to-end latency of the events whose insight appeared since the last
   sample (insight ``created_at`` minus event ``timestamp``: queueing included), p50 and
   p99, Redis ``used_memory``, the inbound stream's own memory (``MEMORY USAGE``), its
   ``XLEN``, the number of keys, and the group's lag and pending count.

The report is the table of samples and, for each series, the least-squares slope per
minute over the samples after ``--warmup-seconds``, with its standard error (the noise of
the slope). Samples a few seconds apart are correlated, so the standard error is a lower
bound of the real uncertainty: read a slope as flat when it is within a few standard
errors of 0, or small against the series' level.

Stream retention: ``STREAM_RETENTION=acked`` and ``STREAM_KEEP_ENTRIES`` are passed to the
worker; a worker without those settings ignores them, and ``XLEN`` then grows by the
producer's rate. Redis' ``used_memory`` also grows by design, stream or not: every insight
is a key with a 24-hour TTL, so it rises until a day of insights is held; the per-event
figure in the summary says by how much.

Every process is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis as sync_redis

from app.settings import Settings
from bench.common import STREAM, event_payload
from bench.driver import group_state, stop_process
from bench.driver import worker_env as bench_worker_env
from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUDGET = "100000000"  # no event of the soak is rate limited
INSIGHT_KEY = "acp:groq:insight:{}"
FAKE = [sys.executable, "-m", "tests.support.fake_groq"]
GIVE_UP_AFTER = 120.0  # an event without an insight after this long is counted as missing


# A worker drains up to SHUTDOWN_TIMEOUT_SECONDS (30) before it exits.
STOP_GRACE_SECONDS = 40.0


# -- the processes ---------------------------------------------------------------------------


def start_fake(latency: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [*FAKE, "--port", str(port), "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{url}/_control/stats", timeout=2).close()
            return process, url
        if process.poll() is not None:
            raise RuntimeError("the fake Groq exited at start")
        time.sleep(0.05)
    stop_process(process, grace=STOP_GRACE_SECONDS)
    raise RuntimeError("the fake Groq did not answer in 20 s")


def worker_env(
    args: argparse.Namespace, redis_url: str, groq_url: str, name: str
) -> dict[str, str]:
    return bench_worker_env(
        redis_url,
        groq_url,
        name,
        WORKER_CONCURRENCY=str(args.concurrency),
        LOG_LEVEL="INFO",
        INSIGHT_BUDGET_PER_HOUR_PER_TENANT=BUDGET,
        STREAM_RETENTION="acked",
        STREAM_KEEP_ENTRIES=str(args.keep_entries),
    )


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [str(BIN / "faststream"), "run", "app:app"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def check_alive(process: subprocess.Popen[bytes], log_path: Path) -> None:
    if process.poll() is not None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the worker exited with {process.returncode}: {tail}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


# -- the events --------------------------------------------------------------------------------


def soak_event(n: int, at: float) -> tuple[str, str]:
    """(event id, payload JSON): the benchmark's event ``n``, stamped with the send time."""
    event = json.loads(event_payload(n))
    event["event_id"] = f"soak-{n:08d}"
    event["timestamp"] = round(at, 3)
    return event["event_id"], json.dumps(event)


def measure_capacity(
    args: argparse.Namespace, server: RedisServer, groq_url: str, log_path: Path
) -> float:
    """Events per second one worker drains from a backlog (database 1, then left alone)."""
    ideal = args.concurrency / args.latency if args.latency > 0 else 500.0
    count = max(300, int(ideal * args.capacity_seconds))
    url = server.url.rsplit("/", 1)[0] + "/1"
    client = sync_redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    now = time.time()
    for n in range(count):
        pipe.xadd(STREAM, {"payload": soak_event(n, now)[1]})
    pipe.execute()
    process = start_worker(worker_env(args, url, groq_url, "soak-capacity"), log_path)
    try:
        deadline = time.monotonic() + 90
        while True:
            check_alive(process, log_path)
            state = group_state(client)
            if state is not None and (state.get("entries-read") or 0) > 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the capacity worker read nothing within 90 s")
            time.sleep(0.01)
        first = time.monotonic()
        deadline = first + max(120.0, 4 * count / ideal)
        while True:
            time.sleep(0.05)
            check_alive(process, log_path)
            state = group_state(client) or {}
            read = state.get("entries-read") or 0
            if read >= count and state.get("lag") == 0 and state.get("pending") == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the capacity worker did not drain {count} events in time")
        elapsed = time.monotonic() - first
    finally:
        stop_process(process, grace=STOP_GRACE_SECONDS)
        client.close()
    return count / elapsed


# -- sampling ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    p50_ms: float
    p99_ms: float
    latencies: int
    used_memory_mb: float
    stream_memory_mb: float
    xlen: int
    keys: int
    lag: int | None
    pending: int
    produced: int
    insights: int
    missing: int


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Tracker:
    """Events sent and not yet seen with an insight; each check yields new latencies."""

    def __init__(self) -> None:
        self.waiting: dict[str, float] = {}
        self.seen = 0
        self.missing = 0

    def sent(self, event_id: str, at: float) -> None:
        self.waiting[event_id] = at

    def collect(self, client: sync_redis.Redis) -> list[float]:
        """End-to-end latencies (s) of the insights that appeared since the last call."""
        ids = list(self.waiting)
        latencies = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for event_id, raw in zip(
                chunk, client.mget([INSIGHT_KEY.format(i) for i in chunk]), strict=True
            ):
                if raw is None:
                    continue
                record = json.loads(raw)
                latencies.append(epoch(record["created_at"]) - float(record["timestamp"]))
                del self.waiting[event_id]
                self.seen += 1
        cutoff = time.time() - GIVE_UP_AFTER
        for event_id, at in list(self.waiting.items()):
            if at < cutoff:
                del self.waiting[event_id]
                self.missing += 1
        return latencies


def take_sample(
    client: sync_redis.Redis,
    pid: int,
    started: float,
    tracker: Tracker,
    produced: int,
) -> Sample:
    latencies = [value * 1000 for value in tracker.collect(client)]
    info = client.info("memory")
    state = group_state(client) or {}
    stream_bytes = client.memory_usage(STREAM, samples=0) or 0
    return Sample(
        t_s=round(time.monotonic() - started, 1),
        rss_mb=round(rss_mb(pid), 1),
        p50_ms=round(percentile(latencies, 0.50), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        latencies=len(latencies),
        used_memory_mb=round(int(info["used_memory"]) / 2**20, 2),
        stream_memory_mb=round(stream_bytes / 2**20, 3),
        xlen=int(client.xlen(STREAM)),
        keys=int(client.dbsize()),
        lag=state.get("lag"),
        pending=int(state.get("pending") or 0),
        produced=produced,
        insights=tracker.seen,
        missing=tracker.missing,
    )


def soak(
    args: argparse.Namespace, server: RedisServer, groq_url: str, rate: float, log_path: Path
) -> list[Sample]:
    client = sync_redis.Redis.from_url(server.url)
    process = start_worker(worker_env(args, server.url, groq_url, "soak-worker"), log_path)
    tracker = Tracker()
    samples: list[Sample] = []
    try:
        deadline = time.monotonic() + 60
        while group_state(client) is None:  # the worker creates its group at start
            check_alive(process, log_path)
            if time.monotonic() > deadline:
                raise RuntimeError("the worker created no group within 60 s")
            time.sleep(0.05)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started + args.sample_seconds
        sent = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - started) * rate)
            if due > sent:
                pipe = client.pipeline(transaction=False)
                at = time.time()
                for n in range(sent, due):
                    event_id, payload = soak_event(n, at)
                    pipe.xadd(STREAM, {"payload": payload})
                    tracker.sent(event_id, at)
                pipe.execute()
                sent = due
            if now >= next_sample:
                check_alive(process, log_path)
                sample = take_sample(client, process.pid, started, tracker, sent)
                samples.append(sample)
                print(row(sample), flush=True)
                next_sample += args.sample_seconds
            time.sleep(0.01)
    finally:
        stop_process(process, grace=STOP_GRACE_SECONDS)
        client.close()
    return samples


# -- the report --------------------------------------------------------------------------------

SERIES = (  # (field, label, unit, whether a growth per event sent means something)
    ("rss_mb", "worker RSS", "MB", True),
    ("p50_ms", "latency p50", "ms", False),
    ("p99_ms", "latency p99", "ms", False),
    ("used_memory_mb", "Redis used_memory", "MB", True),
    ("stream_memory_mb", "inbound stream memory", "MB", True),
    ("xlen", "XLEN inbound stream", "entries", True),
)
HEADER = (
    f"{'t s':>6} {'RSS MB':>7} {'p50 ms':>7} {'p99 ms':>7} {'n':>4} {'Redis MB':>9} "
    f"{'stream MB':>9} {'XLEN':>7} {'keys':>7} {'lag':>5} {'pend':>5} {'sent':>7} {'done':>7}"
)


def row(s: Sample) -> str:
    return (
        f"{s.t_s:>6.0f} {s.rss_mb:>7.1f} {s.p50_ms:>7.0f} {s.p99_ms:>7.0f} {s.latencies:>4} "
        f"{s.used_memory_mb:>9.2f} {s.stream_memory_mb:>9.3f} {s.xlen:>7} {s.keys:>7} "
        f"{'-' if s.lag is None else s.lag:>5} {s.pending:>5} {s.produced:>7} {s.insights:>7}"
    )


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y on x, and its standard error (nan with fewer than 3 points)."""
    points = [(x, y) for x, y in points if not math.isnan(y)]
    n = len(points)
    if n < 3:
        return math.nan, math.nan
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    b = sxy / sxx
    a = mean_y - b * mean_x
    residual = sum((y - a - b * x) ** 2 for x, y in points)
    return b, math.sqrt(residual / (n - 2) / sxx)


def summarise(samples: list[Sample], warmup: float, rate: float) -> list[dict[str, Any]]:
    fitted = [s for s in samples if s.t_s >= warmup]
    summary = []
    for field, label, unit, per_event in SERIES:
        values = [float(getattr(s, field)) for s in fitted]
        per_minute, error = slope([(s.t_s / 60, v) for s, v in zip(fitted, values, strict=True)])
        finite = [v for v in values if not math.isnan(v)]
        summary.append(
            {
                "series": label,
                "unit": unit,
                "first": finite[0] if finite else math.nan,
                "last": finite[-1] if finite else math.nan,
                "mean": statistics.fmean(finite) if finite else math.nan,
                "slope_per_min": per_minute,
                "stderr_per_min": error,
                # MB per event as bytes (entries per event as is): growth per event sent.
                "per_event": (per_minute / (rate * 60)) * (2**20 if unit == "MB" else 1)
                if per_event and rate
                else math.nan,
            }
        )
    return summary


def per_event(item: dict[str, Any]) -> str:
    value = item["per_event"]
    if math.isnan(value):
        return "-"
    return f"{value:+.0f} B" if item["unit"] == "MB" else f"{value:+.3f}"


def render_summary(summary: list[dict[str, Any]]) -> str:
    lines = [
        f"{'series':<24} {'unit':<8} {'first':>9} {'last':>9} {'mean':>9} "
        f"{'slope/min':>11} {'± stderr':>10} {'per event':>12}"
    ]
    for item in summary:
        lines.append(
            f"{item['series']:<24} {item['unit']:<8} {item['first']:>9.2f} {item['last']:>9.2f} "
            f"{item['mean']:>9.2f} {item['slope_per_min']:>+11.3f} {item['stderr_per_min']:>10.3f} "
            f"{per_event(item):>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--latency", type=float, default=0.8, help="fake model latency, s")
    parser.add_argument("--concurrency", type=int, default=32, help="WORKER_CONCURRENCY")
    parser.add_argument("--capacity", type=float, help="events/s; measured when omitted")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--fraction", type=float, default=0.5, help="of capacity (0.5)")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="left out of slopes")
    parser.add_argument("--keep-entries", type=int, default=1000, help="STREAM_KEEP_ENTRIES")
    parser.add_argument("--json", type=Path, help="write samples and summary here")
    args = parser.parse_args(argv)

    retention = "stream_retention" in Settings.model_fields
    logs = Path(tempfile.mkdtemp(prefix="acp-soak-"))
    fake: subprocess.Popen[bytes] | None = None
    print(
        f"soak: {args.minutes:g} min, fake model {args.latency:g} s, WORKER_CONCURRENCY="
        f"{args.concurrency}, STREAM_RETENTION=acked STREAM_KEEP_ENTRIES={args.keep_entries} "
        f"({'read' if retention else 'not read yet'} by this worker); logs in {logs}",
        flush=True,
    )
    with RedisServer() as server:
        try:
            fake, groq_url = start_fake(args.latency)
            capacity = args.capacity
            if capacity is None:
                capacity = measure_capacity(args, server, groq_url, logs / "capacity.log")
                print(f"capacity: {capacity:.1f} events/s (measured)", flush=True)
            else:
                print(f"capacity: {capacity:.1f} events/s (given)", flush=True)
            rate = capacity * args.fraction
            print(f"producer: {rate:.1f} events/s; sample every {args.sample_seconds:g} s")
            print(HEADER, flush=True)
            samples = soak(args, server, groq_url, rate, logs / "soak.log")
        finally:
            stop_process(fake, grace=STOP_GRACE_SECONDS)
    summary = summarise(samples, args.warmup_seconds, rate)
    print(f"\nslopes over t >= {args.warmup_seconds:g} s ({len(samples)} samples in all):")
    print(render_summary(summary))
    last = samples[-1] if samples else None
    if last is not None:
        print(
            f"\nevents sent {last.produced}, insights seen {last.insights}, "
            f"missing (no insight after {GIVE_UP_AFTER:.0f} s) {last.missing}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "capacity": capacity,
                    "rate": rate,
                    "retention_setting_read": retention,
                    "samples": [asdict(s) for s in samples],
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
