"""``groq-worker demo --kafka``: the same demo with the events on a Kafka topic.

The Redis is chosen as for the Redis demo (REDIS_URL, else one of the demo's own); the
Kafka broker is the one at KAFKA_BOOTSTRAP_SERVERS, else the bundled Tansu started for the
run (``kafka_broker``). The topic (KAFKA_TOPIC) is created with three partitions when it
does not exist, the sample is produced to it (value: the event JSON, key: the tenant), and
the demo's worker reads it with ``INBOUND=kafka``; what it wrote is read back from Redis
and shown as in the Redis demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from app.adapters.redis_clients import connect_redis
from app.bootstrap import build_worker
from app.cli._common import EXIT_OK, EXIT_PROBLEM
from app.cli.demo import render
from app.cli.demo.events import SampleEntry, sample_events
from app.cli.demo.kafka_broker import answers, launch_tansu
from app.cli.demo.model import DemoRun
from app.cli.demo.readback import results
from app.cli.demo.redis_choice import choose_redis
from app.cli.demo.session import _end_on_termination
from app.cli.demo.worker import budget_for, outcome_count, worker_settings
from app.domain.insights import Outcome
from app.settings import Inbound, Settings

__all__ = ["run_kafka_demo"]

PARTITIONS = 3


async def _ensure_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, entries: list[SampleEntry]) -> list[str]:
    """Each entry as a record (key: its tenant); their ``<partition>-<offset>``, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        places = []
        for entry in entries:
            sent = await producer.send_and_wait(
                topic, entry.payload.encode(), key=entry.tenant_id.encode()
            )
            places.append(f"{sent.partition}-{sent.offset}")
        return places
    finally:
        await producer.stop()


async def run_kafka_demo(
    options: argparse.Namespace,
    settings: Settings,
    console: Console,
    received: list[signal.Signals],
) -> int:
    """The exit code of one run of the demo on Kafka."""
    _end_on_termination(received)  # SIGTERM and SIGHUP stop what the run started
    async with contextlib.AsyncExitStack() as stack:
        chosen = await choose_redis(options, str(settings.redis_url), settings.redis_mode, stack)
        assert chosen is not None  # not --publish-only
        bootstrap = settings.kafka_bootstrap_servers
        kafka_text = f"{bootstrap} (KAFKA_BOOTSTRAP_SERVERS answers)"
        if not await asyncio.to_thread(answers, bootstrap):
            bootstrap = stack.enter_context(launch_tansu())
            kafka_text = f"started the bundled Tansu broker at {bootstrap}"
        await _ensure_topic(bootstrap, settings.kafka_topic)
        redis = connect_redis(chosen.url, chosen.mode, socket_connect_timeout=5.0)
        stack.push_async_callback(redis.aclose)
        entries = sample_events(options.events, run_id=secrets.token_hex(2), now=time.time())
        base = settings.model_copy(update={"redis_mode": chosen.mode})
        run = DemoRun(base, chosen.url, chosen.server, "", entries)
        budget = await budget_for(redis, options.budget, entries)
        demo = worker_settings(options, base, chosen.url, budget)
        run.settings = demo.model_copy(
            update={
                "inbound": Inbound.KAFKA,
                "kafka_bootstrap_servers": bootstrap,
                # A short session: a rerun of the demo joins the group at once.
                "kafka_session_timeout_ms": 3000,
                "kafka_heartbeat_interval_ms": 500,
            }
        )
        run.worker = build_worker(run.settings)
        console.print(f"[bold]Redis[/bold]  {chosen.description}")
        console.print(
            f"[bold]Kafka[/bold]  {kafka_text}; topic {settings.kafka_topic} "
            f"({PARTITIONS} partitions if the demo created it), group {settings.insight_group}"
        )
        run.live = await stack.enter_async_context(run.worker.running())
        run.entry_ids = await _produce(bootstrap, settings.kafka_topic, entries)
        finished = await _follow(run, console, options.timeout)
        console.print(render.insights_table(await results(redis, run), run))
        console.print(render.outcomes_table(run.worker))
        console.print(render.tokens_line(run.worker))
        if not finished:
            console.print(f"[red]not every record had an outcome within {options.timeout:g} s")
        return EXIT_OK if finished else EXIT_PROBLEM
    raise AssertionError("unreachable")  # pragma: no cover


async def _follow(run: DemoRun, console: Console, within: float) -> bool:
    """Progress until the worker counted an outcome for every record (False: timed out)."""
    assert run.worker is not None
    total, deadline = len(run.entries), time.monotonic() + within
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("processing", total=total)
        while True:
            done = sum(outcome_count(run.worker, outcome) for outcome in Outcome)
            progress.update(task, completed=done)
            if done >= total:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
