"""Driving one measurement: a private redis-server, the fake Groq, the implementation's
process, and what ``/proc`` and Redis say about them while it drains the stream.

See ``bench/run.py`` for what is measured and how; ``measure`` is one measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis

from app.domain.keys import Keys
from bench.common import DLQ, GROUP, STREAM, event_payload
from bench.otlp_sink import OtlpSink
from bench.scenarios import BIN, IMPLEMENTATIONS, Spec
from tests.support.environment import without_settings
from tests.support.fake_groq import API_KEY
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUDGET = "100000000"  # no event of the benchmark is rate limited


# -- what one measurement found ----------------------------------------------------------------


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
    otlp_exports: int = 0  # --otel: export requests the sink received during the run
    otlp_bytes: int = 0


# -- /proc -----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (threads included)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``faststream run --workers N`` forks N processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu(pids: list[int]) -> float:
    return sum(proc_cpu(pid) for pid in pids)


def tree_memory(pids: list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) summed over processes, in MB (the sum of peaks: an upper bound)."""
    rss = peak = 0.0
    for pid in pids:
        one_rss, one_peak = proc_memory(pid)
        rss, peak = rss + one_rss, peak + one_peak
    return rss, peak


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


class SteadyProducer(threading.Thread):
    """Writes ``count`` events at ``rate`` a second (every 10 ms, what is due), as a gateway
    under steady traffic does. Its XADDs count in Redis' statistics like the preload's
    do not: ``writes`` says how many round trips it made, to take them out."""

    def __init__(self, client: Any, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.client, self.count, self.rate = client, count, rate
        self.writes = 0
        self.xadds = 0

    def run(self) -> None:
        began = time.monotonic()
        written = 0
        while written < self.count:
            due = min(self.count, int((time.monotonic() - began) * self.rate) + 1)
            if due > written:
                pipe = self.client.pipeline(transaction=False)
                for n in range(written, due):
                    pipe.xadd(STREAM, {"payload": event_payload(n)})
                pipe.execute()
                self.writes += 1
                self.xadds += due - written
                written = due
            time.sleep(0.01)


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


def scheduled(client: sync_redis.Redis) -> int:
    """Events in the worker's scheduler (EVENT_ORDER=priority): read and acknowledged, not
    yet done."""
    return int(client.hlen(Keys.SCHED_JOBS))


def count_keys(client: sync_redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=5000))


def worker_env(redis_url: str, groq_url: str, worker_id: str, **settings: str) -> dict[str, str]:
    """The environment of a worker a benchmark starts from this repository: the shell's
    without any setting (``without_settings``: an exported ``GROQ_RPM_LIMIT`` or
    ``OTEL_*`` never reaches it), the fake Groq, JSON logs, no metrics port, then
    ``settings``."""
    env = without_settings(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        REDIS_URL=redis_url,
        GROQ_BASE_URL=groq_url,
        GROQ_API_KEY=API_KEY,
        LLM_PROVIDER="groq",
        WORKER_ID=worker_id,
        METRICS_PORT="0",
        LOG_FORMAT="json",
        **settings,
    )
    return env


def implementation_env(
    spec: Spec, redis_url: str, groq_url: str, code_dir: Path, otlp: str | None = None
) -> dict[str, str]:
    """The implementation's environment; ``otlp``: tracing on (--otel), every event sampled,
    exported to that endpoint. Without it no ``OTEL_*`` variable of the shell gets through."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("GROQ_", "OTEL_"))
    }
    if otlp is not None:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
            OTEL_TRACES_SAMPLER="always_on",
            # Room for a drain's spans: a full queue would drop spans, and their cost.
            OTEL_BSP_MAX_QUEUE_SIZE="200000",
        )
    env.update(
        PYTHONPATH=os.pathsep.join(dict.fromkeys([str(code_dir), str(ROOT)])),
        REDIS_URL=redis_url,
        REDIS_MODE=spec.redis_mode,
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
    if spec.processes > 1:
        del env["WORKER_ID"]  # each process names itself <hostname>-<pid>
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


class RedisUnderTest:
    """The Redis of one measurement: a private server, or a private three-primary cluster
    (``--redis-mode cluster``). Its statistics are the sum over its nodes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._cluster = RedisCluster() if mode == "cluster" else None
        self._nodes = self._cluster.nodes if self._cluster else [RedisServer()]

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    @property
    def url(self) -> str:
        return self._cluster.url if self._cluster else self._nodes[0].url

    def start(self) -> None:
        if self._cluster:
            self._cluster.start()
        else:
            self._nodes[0].start()

    def client(self) -> Any:
        if self._cluster:
            return sync_redis.RedisCluster.from_url(self.url)
        return sync_redis.Redis.from_url(self.url)

    def _each_node(self) -> list[sync_redis.Redis]:
        return [sync_redis.Redis(host="127.0.0.1", port=node.port) for node in self._nodes]

    def reset_stats(self) -> None:
        for node in self._each_node():
            node.config_resetstat()
            node.close()

    def info(self) -> dict[str, Any]:
        """INFO of the single server; of a cluster, calls and writes summed over its nodes."""
        total: dict[str, Any] = {"total_writes_processed": 0}
        for node in self._each_node():
            info = node.info("all")
            node.close()
            total["total_writes_processed"] += int(info["total_writes_processed"])
            for key, value in info.items():
                if key.startswith("cmdstat_"):
                    calls = total.setdefault(key, {"calls": 0})
                    calls["calls"] += int(value["calls"])
        return total

    def cpu(self) -> float:
        return sum(proc_cpu(node.process.pid) for node in self._nodes if node.process)

    def close(self) -> None:
        if self._cluster:
            self._cluster.stop()
        else:
            self._nodes[0].close()


def measure(
    spec: Spec, round_no: int, logs_dir: Path, keep_logs: bool, code_dir: Path = ROOT
) -> Result:
    """One measurement of ``spec``. ``code_dir`` is where the implementations import
    ``app`` from: a copy of the worker's code taken when the run started (others may edit
    the tree meanwhile), or the tree itself (--no-snapshot)."""
    result = Result(spec=asdict(spec), variant=spec.variant, round=round_no)
    result.loadavg = loadavg()
    server = RedisUnderTest(spec.redis_mode)
    sink = OtlpSink().__enter__() if spec.otel else None
    fake: Fake | None = None
    process: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    log_path = logs_dir / f"{spec.scenario}-{spec.variant.replace('/', '_')}-r{round_no}.log"
    try:
        server.start()
        fake = Fake(spec.latency, spec.fake)
        client = server.client()
        if not spec.arrival_rate:
            preload(client, spec.events)
        server.reset_stats()
        with log_path.open("wb") as log_file:
            command = IMPLEMENTATIONS[spec.impl]
            if spec.processes > 1:
                command = [*command, "--workers", str(spec.processes)]
            process = subprocess.Popen(
                command,
                cwd=code_dir,
                env=implementation_env(
                    spec, server.url, fake.url, code_dir, sink.endpoint if sink else None
                ),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        spawned = time.monotonic()
        polls = checks = 0  # the harness's own XINFO GROUPS and HLEN
        producer = None
        if spec.arrival_rate:  # the group exists once the worker started: then the events
            while group_state(client) is None:
                polls += 1
                if time.monotonic() - spawned > 90:
                    raise RuntimeError(f"{spec.impl} created no group within 90 s")
                time.sleep(0.01)
            producer = SteadyProducer(server.client(), spec.events, spec.arrival_rate)
            producer.start()

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
        pids = process_tree(process.pid) if spec.processes > 1 else [process.pid]
        cpu_first = tree_cpu(pids)
        fake_first = proc_cpu(fake.process.pid)
        redis_first = server.cpu()
        busy_first, self_first = machine_busy(), self_cpu()
        rss_first, _ = tree_memory(pids)
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
            # EVENT_ORDER=priority acknowledges what it schedules: done when none waits there
            if read >= spec.events and lag == 0 and pending == 0:
                checks += 1
                if not scheduled(client):
                    complete = True
                    break
            if time.monotonic() - first > cap:
                break
        done = time.monotonic()
        cpu_done = tree_cpu(pids)
        fake_done = proc_cpu(fake.process.pid)
        redis_done = server.cpu()
        busy_done, self_done = machine_busy(), self_cpu()
        _, rss_peak = tree_memory(pids)
        info = server.info()
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
        if producer is not None:  # the gateway's writes are not the worker's cost
            producer.join(timeout=5)
            stats["xadd"] = stats.get("xadd", 0) - producer.xadds
        stats["hlen"] = stats.get("hlen", 0) - checks
        stats["config|resetstat"] = stats.get("config|resetstat", 0) - server.node_count
        stats = {name: calls for name, calls in sorted(stats.items()) if calls > 0}
        result.commandstats = stats
        round_trips = int(info["total_writes_processed"]) - polls - checks - server.node_count
        if producer is not None:
            round_trips -= producer.writes
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
        if sink is not None:
            result.otlp_exports, result.otlp_bytes = sink.received
            if not result.otlp_exports:
                problems.append("tracing on (--otel) but no span was exported")
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
        if sink is not None:
            sink.__exit__(None, None, None)
        if not keep_logs and result.ok:
            log_path.unlink(missing_ok=True)
    return result
