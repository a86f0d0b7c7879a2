"""A deployment's life: rolling deploys under new pod names, consumers that leave or die.

Real worker processes (``faststream run app:app``), a private redis-server and the fake
Groq, checked from outside through Redis and the fake's request log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis as sync_redis

from tests.faults.harness import (
    GROUP,
    STREAM,
    FakeGroqProcess,
    WorkerProcess,
    events,
    outcomes,
    wait_until,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.faults

CLAIM_IDLE_SECONDS = 60  # the default: what a stranded entry would wait for


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    connection = sync_redis.Redis.from_url(redis_server.url)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def fake() -> Iterator[FakeGroqProcess]:
    process = FakeGroqProcess(latency=0.8).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def start_worker(workers, redis_server, fake, worker_id, **env) -> WorkerProcess:
    env.setdefault("claim_idle_seconds", CLAIM_IDLE_SECONDS)
    worker = WorkerProcess(redis_server.url, fake.base_url, worker_id=worker_id, **env).start()
    workers.append(worker)
    return worker


def consumers(client) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"]) for c in client.xinfo_consumers(STREAM, GROUP)}


def test_rolling_deploy_hands_read_ahead_entries_to_the_next_pod_at_once(
    client, redis_server, fake, workers
):
    """SIGTERM on pod-a: pod-b, under a new name, finishes its entries without waiting a minute."""
    ids = events(client, 300)
    pod_a = start_worker(workers, redis_server, fake, "pod-a", worker_concurrency=32)
    wait_until(lambda: fake.stats()["requests"] >= 20, within=60, what="20 calls by pod-a")
    assert pod_a.terminate(within=30) == 0
    held = consumers(client).get("pod-a", 0)
    assert held > 0, "pod-a left read-ahead entries pending: the case this test is about"

    began = time.monotonic()
    start_worker(workers, redis_server, fake, "pod-b", worker_concurrency=32)
    wait_until(
        lambda: len(outcomes(client, ids)["insights"]) == len(ids), within=55, what="backlog"
    )
    took = time.monotonic() - began
    assert took < CLAIM_IDLE_SECONDS / 2, f"pod-b took {took:.0f}s: entries waited to go idle"

    state = outcomes(client, ids)
    assert state["dead"] == []
    calls = Counter(fake.agents_requested())
    assert set(calls) == set(ids), "no call lost"
    assert max(calls.values()) == 1, "no event enriched twice"
    wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, within=10, what="acks")
    assert consumers(client).get("pod-a", 0) == 0, "pod-a holds nothing"
    assert '"event": "consumer_leaving"' in pod_a.log()


def test_a_consumer_that_holds_nothing_leaves_the_group_at_a_graceful_stop(
    client, redis_server, fake, workers
):
    """A worker stopped with nothing pending removes its consumer from the group."""
    ids = events(client, 10)
    worker = start_worker(workers, redis_server, fake, "pod-idle", worker_concurrency=32)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) == 10, within=30, what="insights")
    wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, within=10, what="acks")
    assert "pod-idle" in consumers(client)
    assert worker.terminate(within=30) == 0
    assert "pod-idle" not in consumers(client)


def test_consumers_of_dead_processes_are_pruned_once_idle_and_empty(
    client, redis_server, fake, workers
):
    """kill -9 leaves a consumer; a live worker removes it once idle, never one holding entries."""
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer(STREAM, GROUP, "ghost-empty")
    # a dead consumer still holding an entry must stay until its entry is claimed
    events(client, 1, prefix="held")
    client.xreadgroup(GROUP, "ghost-holding", {STREAM: ">"}, count=1)
    time.sleep(1.5)
    live = start_worker(
        workers,
        redis_server,
        fake,
        "pod-live",
        consumer_prune_idle_seconds=1,
        claim_idle_seconds=3600,
    )
    wait_until(lambda: "ghost-empty" not in consumers(client), within=30, what="the prune")
    remaining = consumers(client)
    assert remaining.get("ghost-holding") == 1, "a consumer holding an entry is kept"
    pruned = [line for line in live.log().splitlines() if "departed_consumers_pruned" in line]
    assert pruned, "the prune is logged"
    assert all("pod-live" not in line for line in pruned), "a worker never prunes itself"
