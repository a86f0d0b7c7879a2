"""The throughput, latency, memory and Redis-cost benchmark of the worker against two baselines.

``.venv/bin/python -m bench [--quick] [--runs N] [--scenario overhead|latency|memory|all]
[--impl worker,bare,naive] [--profile] [--json FILE]``

For every measurement: a private ``redis-server`` (no persistence) and a lean loopback fake
Groq (``bench.lean_groq``) are started, N events are pre-loaded in the gateway's wire format
(pipelined ``XADD acp:groq_queue * payload <json>``), Redis's statistics are reset
(``CONFIG RESETSTAT``), and the implementation is started as a user would start it:

* ``worker``: ``faststream run app:app`` (the worker under test, unchanged);
* ``bare``: ``python -m bench.baseline_bare`` (redis-py + groq SDK, no framework);
* ``naive``: ``faststream run bench.baseline_faststream:app`` (the docs-style FastStream app).

The drain is timed from the first read (the first ``XINFO GROUPS`` poll, every 5 ms, that
shows ``entries-read`` > 0) to the group settled (lag 0, nothing pending; polled every
50 ms). Then the harness records the process's CPU (``/proc/<pid>/stat``, user+sys, counted
from the first read), its peak RSS (``VmHWM``), the fake's and redis-server's CPU, the
machine's CPU used by other processes meanwhile (``/proc/stat``), ``INFO commandstats`` and
the round trips (``total_writes_processed``: redis-server's reply writes; one per request or
pipeline or MULTI/EXEC when a client waits for each reply before sending more, as redis-py
does), less the harness's own polls. Every insight key is counted (``SCAN``), the DLQ must be
empty and the fake must have had exactly one model call per event.

Every process is killed at the end of its measurement, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter as Tally
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench import prompt_scrub
from bench.common import DLQ, GROUP, STREAM, event_payload
from tests.support.fake_groq import API_KEY
from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUDGET = "100000000"  # no event of the benchmark is rate limited
# Where the implementations import ``app`` from: a copy of the worker's code taken when the
# run starts (others may edit the tree meanwhile), or the tree itself (--no-snapshot).
CODE_DIR = ROOT

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

    @property
    def variant(self) -> str:
        parts = [self.impl]
        if self.impl != "naive":
            parts.append(f"c{self.concurrency}")
        if self.log_level != "INFO":
            parts.append(self.log_level.lower())
        if self.transport != "aiohttp":
            parts.append(self.transport)
        if self.fake != "lean":
            parts.append(f"{self.fake}-fake")
        return "/".join(parts)

    @property
    def ideal_rate(self) -> float | None:
        if self.latency <= 0:
            return None
        slots = 1 if self.impl == "naive" else self.concurrency
        return slots / self.latency


@dataclass
class Result:
    spec: dict[str, Any]
    variant: str
    round: int
    ok: bool = False
    error: str | None = None
    drained: int = 0
    complete: bool = False
    startup_s: float = 0.0
    drain_s: float = 0.0
    events_per_s: float = 0.0
    ideal_per_s: float | None = None
    of_ideal: float | None = None
    cpu_s: float = 0.0
    cpu_ms_per_event: float = 0.0
    cpu_util: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    fake_cpu_ms_per_event: float = 0.0
    fake_cpu_util: float = 0.0
    redis_cpu_ms_per_event: float = 0.0
    others_cpu_util: float = 0.0
    loadavg: str = ""
    commands_per_event: float = 0.0
    round_trips_per_event: float = 0.0
    round_trips_excl_reads_per_event: float = 0.0
    reads_per_event: float = 0.0
    commandstats: dict[str, int] = field(default_factory=dict)
    insights: int = 0
    dlq: int = 0
    model_calls: int = 0
    fake_max_in_flight: int = 0
    fake_connections: int = 0
    log_lines: int = 0
    log_errors: int = 0
    profile: str | None = None


# -- /proc -----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (threads included)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _unit = line.split()
                values[name] = int(amount) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    with open("/proc/stat") as handle:
        parts = [int(x) for x in handle.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


def self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


# -- the pieces of a measurement ------------------------------------------------------------


class Fake:
    """The fake Groq in its own process (the lean one by default)."""

    def __init__(self, latency: float, kind: str) -> None:
        self.port = free_port()
        module = "bench.lean_groq" if kind == "lean" else "tests.support.fake_groq"
        self.stats_path = "/_stats" if kind == "lean" else "/_control/stats"
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(self.port), "--latency", str(latency)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.stats()
                return
            if self.process.poll() is not None:
                raise RuntimeError("the fake Groq exited at start")
            time.sleep(0.05)
        raise RuntimeError("the fake Groq did not answer in 20 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}{self.stats_path}", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[Any] | None, *, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; only this process."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def preload(client: sync_redis.Redis, count: int) -> None:
    """XADD ``count`` events in the gateway's wire format, pipelined in chunks."""
    chunk = 5000
    for start in range(0, count, chunk):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + chunk, count)):
            pipe.xadd(STREAM, {"payload": event_payload(n)})
        pipe.execute()


def group_state(client: sync_redis.Redis) -> dict[str, Any] | None:
    try:
        groups = client.xinfo_groups(STREAM)
    except sync_redis.ResponseError:  # no stream yet
        return None
    for group in groups:
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == GROUP:
            return dict(group)
    return None


def count_keys(client: sync_redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=5000))


def implementation_env(spec: Spec, redis_url: str, groq_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GROQ_")}
    env.update(
        PYTHONPATH=os.pathsep.join(dict.fromkeys([str(CODE_DIR), str(ROOT)])),
        REDIS_URL=redis_url,
        GROQ_BASE_URL=groq_url,
        GROQ_API_KEY=API_KEY,
        LLM_PROVIDER="groq",
        WORKER_ID=f"bench-{spec.impl}",
        WORKER_CONCURRENCY=str(spec.concurrency),
        METRICS_PORT="0",
        LOG_LEVEL=spec.log_level,
        LOG_FORMAT="json",
        INSIGHT_BUDGET_PER_HOUR_PER_TENANT=BUDGET,
        BENCH_TRANSPORT=spec.transport,
    )
    return env


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy into the venv)")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--gil",
            "--nonblocking",
            "--format",
            "raw",
            "--full-filenames",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(spec: Spec, round_no: int, logs_dir: Path, keep_logs: bool) -> Result:
    result = Result(spec=asdict(spec), variant=spec.variant, round=round_no)
    result.loadavg = loadavg()
    server = RedisServer()
    fake: Fake | None = None
    process: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    log_path = logs_dir / f"{spec.scenario}-{spec.variant.replace('/', '_')}-r{round_no}.log"
    try:
        server.start()
        assert server.process is not None
        redis_pid = server.process.pid
        fake = Fake(spec.latency, spec.fake)
        client = sync_redis.Redis.from_url(server.url)
        preload(client, spec.events)
        client.config_resetstat()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                IMPLEMENTATIONS[spec.impl],
                cwd=CODE_DIR,
                env=implementation_env(spec, server.url, fake.url),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        spawned = time.monotonic()
        polls = 0

        def alive() -> None:
            assert process is not None
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{spec.impl} exited with {process.returncode}: {tail}")

        # The first read: the group shows entries read.
        deadline = spawned + 90
        while True:
            alive()
            state = group_state(client)
            polls += 1
            if state is not None and (state.get("entries-read") or 0) > 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.impl} read nothing within 90 s")
            time.sleep(0.005)
        first = time.monotonic()
        cpu_first = proc_cpu(process.pid)
        fake_first = proc_cpu(fake.process.pid)
        redis_first = proc_cpu(redis_pid)
        busy_first, self_first = machine_busy(), self_cpu()
        rss_first, _ = proc_memory(process.pid)
        if spec.profile:
            profile_path = RESULTS / f"profile-{spec.scenario}-{spec.variant.replace('/', '_')}.txt"
            profiler = start_profiler(process.pid, profile_path)
            result.profile = str(profile_path.relative_to(ROOT))

        # The drain: until lag 0 and nothing pending (or the time cap).
        cap = spec.time_cap or max(300.0, spec.events / 20)
        complete = False
        while True:
            time.sleep(0.05)
            alive()
            state = group_state(client)
            polls += 1
            if state is None:
                continue
            read, lag, pending = state.get("entries-read") or 0, state.get("lag"), state["pending"]
            if read >= spec.events and lag == 0 and pending == 0:
                complete = True
                break
            if time.monotonic() - first > cap:
                break
        done = time.monotonic()
        cpu_done = proc_cpu(process.pid)
        fake_done = proc_cpu(fake.process.pid)
        redis_done = proc_cpu(redis_pid)
        busy_done, self_done = machine_busy(), self_cpu()
        _, rss_peak = proc_memory(process.pid)
        info = client.info("all")
        state = group_state(client) or {}

        drained = (state.get("entries-read") or 0) - state.get("pending", 0)
        elapsed = done - first
        result.complete = complete
        result.drained = drained
        result.startup_s = round(first - spawned, 3)
        result.drain_s = round(elapsed, 3)
        result.events_per_s = round(drained / elapsed, 1) if elapsed else 0.0
        result.ideal_per_s = spec.ideal_rate
        if spec.ideal_rate:
            result.of_ideal = round(result.events_per_s / spec.ideal_rate, 4)
        cpu = cpu_done - cpu_first
        result.cpu_s = round(cpu, 2)
        per = max(drained, 1)
        result.cpu_ms_per_event = round(cpu * 1000 / per, 3)
        result.cpu_util = round(cpu / elapsed, 3)
        result.rss_start_mb = round(rss_first, 1)
        result.rss_peak_mb = round(rss_peak, 1)
        result.fake_cpu_ms_per_event = round((fake_done - fake_first) * 1000 / per, 3)
        result.fake_cpu_util = round((fake_done - fake_first) / elapsed, 3)
        result.redis_cpu_ms_per_event = round((redis_done - redis_first) * 1000 / per, 3)
        ours = (cpu_done - cpu_first) + (fake_done - fake_first) + (redis_done - redis_first)
        ours += self_done - self_first
        result.others_cpu_util = round(max(0.0, (busy_done - busy_first) - ours) / elapsed, 3)

        # Redis cost: the harness's own XINFO polls and RESETSTAT taken out.
        stats = {
            key.removeprefix("cmdstat_"): int(value["calls"])
            for key, value in info.items()
            if key.startswith("cmdstat_")
        }
        stats["xinfo|groups"] = stats.get("xinfo|groups", 0) - polls
        stats["config|resetstat"] = stats.get("config|resetstat", 0) - 1
        stats = {name: calls for name, calls in sorted(stats.items()) if calls > 0}
        result.commandstats = stats
        round_trips = int(info["total_writes_processed"]) - polls - 1
        result.commands_per_event = round(sum(stats.values()) / per, 2)
        result.round_trips_per_event = round(round_trips / per, 3)
        result.reads_per_event = round(stats.get("xreadgroup", 0) / per, 4)
        result.round_trips_excl_reads_per_event = round(
            (round_trips - stats.get("xreadgroup", 0)) / per, 3
        )
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=30)

        # Every insight written, nothing dead-lettered, one model call per event.
        result.insights = count_keys(client, "acp:groq:insight:*")
        result.dlq = int(client.llen(DLQ))
        fake_stats = fake.stats()
        result.model_calls = int(fake_stats.get("requests", 0))
        result.fake_max_in_flight = int(fake_stats.get("max_in_flight", 0))
        result.fake_connections = int(fake_stats.get("connections", 0))
        text = log_path.read_text(errors="replace")
        result.log_lines = text.count("\n")
        result.log_errors = len(re.findall(r'"level": ?"(?:error|critical)"|Traceback', text))
        problems = []
        if complete and result.insights != spec.events:
            problems.append(f"{result.insights} insights for {spec.events} events")
        if result.dlq:
            problems.append(f"{result.dlq} dead letters")
        if complete and result.model_calls != spec.events:
            problems.append(f"{result.model_calls} model calls for {spec.events} events")
        if not complete and spec.time_cap is None:
            problems.append(f"not drained in {cap:.0f} s ({drained}/{spec.events})")
        if not complete and drained == 0:
            problems.append(f"nothing acknowledged in {elapsed:.0f} s")
        result.error = "; ".join(problems) or None
        result.ok = not problems
        client.close()
    except Exception as exc:  # a failed measurement is reported, the run goes on
        result.error = f"{type(exc).__name__}: {exc}"[:3000]
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=30)
            if profiler.poll() is None:
                profiler.kill()
        stop_process(process)
        if fake is not None:
            fake.stop()
        server.close()
        if not keep_logs and result.ok:
            log_path.unlink(missing_ok=True)
    return result


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
    elif name == "memory":
        n = args.events or (20_000 if quick else 200_000)
        cap = 15.0 if quick else args.memory_seconds
        for impl in impls:
            specs.append(Spec("memory", impl, n, 0.0, 64, time_cap=cap))
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    if args.fake != "lean":
        for spec in specs:
            spec.fake = args.fake
    return specs


# -- summaries -----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


SUMMARY_FIELDS = (
    "events_per_s",
    "of_ideal",
    "cpu_ms_per_event",
    "cpu_util",
    "rss_start_mb",
    "rss_peak_mb",
    "fake_cpu_ms_per_event",
    "fake_cpu_util",
    "redis_cpu_ms_per_event",
    "others_cpu_util",
    "commands_per_event",
    "round_trips_per_event",
    "round_trips_excl_reads_per_event",
    "reads_per_event",
    "drain_s",
    "drained",
)


def summarise(results: list[Result]) -> dict[str, Any]:
    by_key: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        by_key.setdefault((result.spec["scenario"], result.variant), []).append(result)
    summary: dict[str, Any] = {}
    for (scenario, variant), group in by_key.items():
        good = [r for r in group if r.ok]
        entry: dict[str, Any] = {
            "runs": len(group),
            "ok": len(good),
            "events": group[0].spec["events"],
            "latency": group[0].spec["latency"],
            "concurrency": group[0].spec["concurrency"],
            "ideal_per_s": group[0].ideal_per_s,
        }
        for name in SUMMARY_FIELDS:
            entry[name] = median([getattr(r, name) for r in good])
        calls: Tally[str] = Tally()
        for r in good:
            calls.update(r.commandstats)
        per = sum(max(r.drained, 1) for r in good) or 1
        entry["calls_per_event"] = {k: round(v / per, 3) for k, v in calls.most_common()}
        summary.setdefault(scenario, {})[variant] = entry
    # Ratios measured side by side: worker over each baseline in the same round.
    for scenario, variants in summary.items():
        for variant, entry in variants.items():
            if not variant.startswith("worker"):
                continue
            rest = variant.removeprefix("worker")
            ratios = {}
            for base in ("bare", "naive"):
                base_variant = base + (rest if base != "naive" else "")
                if scenario == "latency" and base == "naive":
                    base_variant = "naive"
                if base == "naive" and rest not in ("/c64", "/c256"):
                    continue
                pairs = _paired(results, scenario, variant, base_variant)
                if pairs:
                    ratios[f"vs_{base_variant}"] = {
                        "events_per_s": median(
                            [w.events_per_s / b.events_per_s for w, b in pairs if b.events_per_s]
                        ),
                        "cpu_ms_per_event": median(
                            [
                                w.cpu_ms_per_event / b.cpu_ms_per_event
                                for w, b in pairs
                                if b.cpu_ms_per_event
                            ]
                        ),
                        "rss_peak_mb": median(
                            [w.rss_peak_mb / b.rss_peak_mb for w, b in pairs if b.rss_peak_mb]
                        ),
                        "round_trips_per_event": median(
                            [
                                w.round_trips_per_event / b.round_trips_per_event
                                for w, b in pairs
                                if b.round_trips_per_event
                            ]
                        ),
                    }
            entry["ratios"] = ratios
    return summary


def _paired(results: list[Result], scenario: str, a: str, b: str) -> list[tuple[Result, Result]]:
    rounds: dict[int, dict[str, Result]] = {}
    for r in results:
        if r.ok and r.spec["scenario"] == scenario and r.variant in (a, b):
            rounds.setdefault(r.round, {})[r.variant] = r
    return [(v[a], v[b]) for v in rounds.values() if a in v and b in v]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(entry: dict[str, Any], base: str, name: str) -> str:
    for key, value in entry.get("ratios", {}).items():
        if key.startswith(f"vs_{base}") and value.get(name) is not None:
            return f"{value[name]:.2f}x"
    return "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


# (column title, how to render it from a summary entry), per scenario.
_Column = tuple[str, Any]
_COMMON_HEAD: list[_Column] = [("events", lambda e: fmt(e["events"]))]
COLUMNS: dict[str, list[_Column]] = {
    "overhead": [
        *_COMMON_HEAD,
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("CPU util", lambda e: fmt(e["cpu_util"], 2)),
        ("peak RSS MB", lambda e: fmt(e["rss_peak_mb"])),
        ("fake CPU ms/ev", lambda e: fmt(e["fake_cpu_ms_per_event"], 3)),
        ("redis CPU ms/ev", lambda e: fmt(e["redis_cpu_ms_per_event"], 3)),
        ("cmds/ev", lambda e: fmt(e["commands_per_event"], 2)),
        ("RT/ev", lambda e: fmt(e["round_trips_per_event"], 2)),
        ("RT/ev excl. reads", lambda e: fmt(e["round_trips_excl_reads_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("ev/s vs bare", lambda e: _ratio(e, "bare", "events_per_s")),
        ("ev/s vs naive", lambda e: _ratio(e, "naive", "events_per_s")),
        ("CPU/ev vs bare", lambda e: _ratio(e, "bare", "cpu_ms_per_event")),
    ],
    "latency": [
        *_COMMON_HEAD,
        ("ideal ev/s", lambda e: fmt(e["ideal_per_s"])),
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("of ideal", lambda e: _pct(e["of_ideal"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("CPU util", lambda e: fmt(e["cpu_util"], 2)),
        ("RT/ev", lambda e: fmt(e["round_trips_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("ev/s vs bare", lambda e: _ratio(e, "bare", "events_per_s")),
        ("ev/s vs naive", lambda e: _ratio(e, "naive", "events_per_s")),
    ],
    "memory": [
        *_COMMON_HEAD,
        ("drained", lambda e: fmt(e["drained"], 0)),
        ("ev/s", lambda e: fmt(e["events_per_s"])),
        ("RSS at first read MB", lambda e: fmt(e["rss_start_mb"])),
        ("peak RSS MB", lambda e: fmt(e["rss_peak_mb"])),
        ("CPU ms/ev", lambda e: fmt(e["cpu_ms_per_event"], 2)),
        ("others' CPU", lambda e: fmt(e["others_cpu_util"], 2)),
        ("runs ok", lambda e: f"{e['ok']}/{e['runs']}"),
        ("peak RSS vs bare", lambda e: _ratio(e, "bare", "rss_peak_mb")),
        ("peak RSS vs naive", lambda e: _ratio(e, "naive", "rss_peak_mb")),
    ],
}


def render_tables(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    for scenario, variants in summary.items():
        columns = COLUMNS[scenario]
        lines.append(f"\n### {scenario}\n")
        lines.append("| variant | " + " | ".join(title for title, _ in columns) + " |")
        lines.append("| --- |" + " ---: |" * len(columns))
        for variant, entry in variants.items():
            cells = [render(entry) for _, render in columns]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        if scenario in ("overhead", "latency"):
            lines.append("\nRedis commands per event (`INFO commandstats`, all runs):\n")
            for variant, entry in variants.items():
                calls = ", ".join(
                    f"{name} {count:g}"
                    for name, count in entry["calls_per_event"].items()
                    if count >= 0.005
                )
                lines.append(f"- `{variant}`: {calls}")
    return "\n".join(lines) + "\n"


# -- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        memory = f"{int(handle.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    versions = {}
    for package in (
        "faststream",
        "redis",
        "groq",
        "aiohttp",
        "httpx",
        "pydantic",
        "structlog",
        "uvloop",
    ):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    code: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        code["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        code["uncommitted_in_app"] = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")[:-1]
    return {
        "code": code,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "packages": versions,
        "loadavg_at_start": loadavg(),
    }


# -- main -----------------------------------------------------------------------------------


def measure_all(
    args: argparse.Namespace, scenarios: list[str], impls: list[str], runs: int, logs_dir: Path
) -> tuple[list[Result], dict[str, str]]:
    """Every round of every scenario, then the profiles; printed as they come."""
    results: list[Result] = []
    began = time.monotonic()
    for round_no in range(1, runs + 1):
        for scenario in scenarios:
            for spec in scenario_specs(scenario, impls, args.quick, args):
                if spec.extra and round_no > 1 and not args.extras_every_round:
                    continue
                result = measure(spec, round_no, logs_dir, args.keep_logs)
                results.append(result)
                status = "ok" if result.ok else f"FAILED: {result.error}"
                extra = f" {result.of_ideal * 100:.1f}% of ideal" if result.of_ideal else ""
                print(
                    f"[{time.monotonic() - began:6.0f}s] r{round_no} {scenario:8} "
                    f"{spec.variant:24} "
                    f"{result.drained:>7} ev {result.events_per_s:>8.1f} ev/s{extra} "
                    f"cpu {result.cpu_ms_per_event:.2f} ms/ev rss {result.rss_peak_mb:.0f} MB "
                    f"rt {result.round_trips_per_event:.2f}/ev fake {result.fake_cpu_util:.2f} "
                    f"others {result.others_cpu_util:.2f} load {result.loadavg} {status}",
                    flush=True,
                )
    profiles: dict[str, str] = {}
    if args.profile:
        from bench.profile_summary import summarise_profile

        n = args.events or (1000 if args.quick else 3000)
        for impl in args.profile_impl.split(","):
            spec = Spec("overhead", impl.strip(), n, 0.0, 64, profile=True, fake=args.fake)
            result = measure(spec, 0, logs_dir, args.keep_logs)
            print(
                f"profile run of {impl}: {result.events_per_s} ev/s "
                f"{result.error or ''} -> {result.profile}"
            )
            results.append(result)
            if result.profile and (ROOT / result.profile).exists():
                profiles[impl] = summarise_profile(ROOT / result.profile)
                print(profiles[impl])

    return results, profiles


def snapshot_code(stamp: str) -> tuple[Path, str]:
    """Copy ``app/`` aside, so that every run of this benchmark measures the same code."""
    target = RESULTS / f"snapshot-{stamp}"
    shutil.copytree(ROOT / "app", target / "app", ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for path in sorted((target / "app").rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(path.read_bytes())
    return target, digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        default="all",
        help="overhead, latency, memory or all (= overhead + latency); comma-separated",
    )
    parser.add_argument(
        "--impl", default="worker,bare,naive", help="comma-separated: worker, bare, naive"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument(
        "--quick", action="store_true", help="small event counts, one round, no extra variants"
    )
    parser.add_argument(
        "--events", type=int, default=0, help="override the event count (overhead, memory)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.25, help="model latency of the latency scenario (s)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=12.0,
        help="latency runs: events = ideal rate x this, at most --latency-max-events",
    )
    parser.add_argument(
        "--latency-max-events",
        type=int,
        default=3000,
        help="latency runs: the most events (a CPU-bound run drains slower than ideal)",
    )
    parser.add_argument(
        "--memory-seconds", type=float, default=60.0, help="memory runs: draining time measured"
    )
    parser.add_argument(
        "--extras-every-round",
        action="store_true",
        help="measure the side variants (WARNING logs, httpx) in every round, not only the first",
    )
    parser.add_argument(
        "--fake",
        choices=("lean", "stock"),
        default="lean",
        help="lean: bench.lean_groq; stock: tests.support.fake_groq",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the worker (py-spy) in one overhead run",
    )
    parser.add_argument(
        "--profile-impl",
        default="worker",
        help="with --profile: which implementations to profile (comma-separated)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default bench/results/<time>.json)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep every implementation's log")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the worker from the tree as it is (default: from a copy of app/ taken at start)",
    )
    args = parser.parse_args(argv)

    scenarios = ["overhead", "latency"] if args.scenario == "all" else args.scenario.split(",")
    if "redis" in scenarios:  # the Redis cost is measured in every run; shown with overhead
        scenarios = ["overhead" if s == "redis" else s for s in scenarios]
    impls = [name.strip() for name in args.impl.split(",") if name.strip()]
    runs = 1 if args.quick and args.runs == 3 else args.runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=RESULTS))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.json or RESULTS / f"bench-{stamp}.json"
    info = machine()
    global CODE_DIR
    if not args.no_snapshot:
        CODE_DIR, digest = snapshot_code(stamp)
        info["code"]["app_snapshot_sha256"] = digest
    print(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, {info['memory']}, "
        f"load {info['loadavg_at_start']}",
        flush=True,
    )

    try:
        results, profiles = measure_all(args, scenarios, impls, runs, logs_dir)
    finally:
        if CODE_DIR != ROOT:
            shutil.rmtree(CODE_DIR, ignore_errors=True)
    summary = summarise([r for r in results if r.round > 0])
    scrub = prompt_scrub.measure()
    payload = {
        "machine": info,
        "loadavg_at_end": loadavg(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "summary": summary,
        "prompt_scrub_us_per_event": scrub,
        "profiles": profiles,
        "results": [asdict(r) for r in results],
    }
    out.write_text(json.dumps(payload, indent=2))
    tables = render_tables(summary)
    out.with_suffix(".md").write_text(tables)
    print(tables)
    print(prompt_scrub.render(scrub))
    print(f"results: {out} (tables: {out.with_suffix('.md')})")
    with contextlib.suppress(OSError):
        logs_dir.rmdir()  # empty unless a log was kept
    if logs_dir.exists():
        print(f"logs kept (failed measurements, or --keep-logs): {logs_dir}")
    return 0 if all(r.ok for r in results) else 1
