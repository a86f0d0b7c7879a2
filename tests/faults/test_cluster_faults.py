"""Fault tests on a Redis Cluster: real worker processes (``REDIS_MODE=cluster``).

* kill -9 of a worker in the middle of a write (insight stored, lease still held: the
  write the cluster store resumes), at a random point of a busy drain; the other events in
  flight are cut at whatever step they are (claim, charge, store, index, announce,
  release, XACK). Then a restart: every event ends with exactly one insight, every index
  holds it, the tenant's budget counter counts each event once, and no lease is left;
* a slot migration (``redis-cli --cluster reshard``) of slots holding insight keys during
  a drain: the worker follows MOVED/ASK and loses nothing;
* a primary killed (kill -9) and restarted during a drain: the worker waits it out and
  resumes.

The default run kills once as soon as a write is in progress and once at the point of the
drain ``FAST_SEEDS`` picks; ``make test-cluster`` (marker ``cluster``) runs ``LONG_SEEDS``
more (``-s`` prints how many writes each kill cut short). Every kill must cut a write short:
a kill between writes would not test the resumption, and a seed's blind moment misses one
about as often as not. So the worker is frozen (SIGSTOP) when a write is seen in progress;
frozen, it sends nothing more, so a write still in progress then is cut short by the kill;
if none is, it is thawed and watched again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.domain.keys import ClusterKeys, Keys
from tests.faults.harness import (
    GROUP,
    STREAM,
    RedisClient,
    RedisTarget,
    WorkerProcess,
    Workers,
    events,
    outcomes,
    wait_until,
)
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.faults, pytest.mark.cluster_smoke]

FAKE_LATENCY = 0.02  # short model calls: a kill lands among writes, not only among calls
FAST_SEEDS = [1]
LONG_SEEDS = [seed for seed in range(1, 23) if seed not in FAST_SEEDS]
EVENTS = 90  # under the agent list's 100: every event stays in by_agent:agent-a
# Frozen, a worker sends nothing more; this is ample for Redis to answer what it had sent.
FREEZE_SETTLE_SECONDS = 0.05


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """One cluster for the module (AOF on, so a restarted primary keeps its keys)."""
    with RedisCluster(extra_args=("--appendonly", "yes", "--appendfsync", "always")) as started:
        yield started


@pytest.fixture
def redis_target(cluster: RedisCluster) -> RedisTarget:
    """The module's cluster (the workers run with ``REDIS_MODE=cluster``), emptied first."""
    cluster.wait_ok()  # a test before may have left a node restarting
    target = RedisTarget(cluster.url, "cluster")
    connection = target.connect()
    try:
        connection.flushall()  # every primary
    finally:
        connection.close()
    return target


def complete(client: RedisClient, ids: list[str]) -> dict[str, Any] | None:
    state = outcomes(client, ids)
    return state if len(state["insights"]) == len(ids) and state["pending"] == 0 else None


def assert_every_event_written_once(client: RedisClient, ids: list[str]) -> None:
    """One insight per event, every index complete, the budget exact, no lease left."""
    state = wait_until(lambda: complete(client, ids), within=90, what="every insight")
    assert state["dead"] == []
    wanted = set(ids)
    assert {m.decode() for m in client.zrange(Keys.TIMELINE, 0, -1)} == wanted
    assert {m.decode() for m in client.zrange(Keys.by_tenant("acme"), 0, -1)} == wanted
    by_agent = [m.decode() for m in client.lrange(Keys.by_agent("agent-a"), 0, -1)]
    assert sorted(by_agent) == sorted(ids)  # each once: LREM before LPUSH
    assert int(client.get(Keys.rate_limit("acme"))) == len(ids)  # each event charged once
    assert client.scard(Keys.charged("acme")) == len(ids)
    leases = [client.exists(ClusterKeys.lease(event_id)) for event_id in ids]
    assert sum(leases) == 0
    announced = {
        json.loads(fields[b"payload"])["event_id"]
        for _id, fields in client.xrange(Keys.INSIGHTS_STREAM)
    }
    assert announced == wanted  # each announced, at least once


def writes_in_progress(client: RedisClient, ids: list[str]) -> int:
    """Events whose insight is stored while their lease is still held (W1 done, W4 not)."""
    pipe = client.pipeline(transaction=False)
    for event_id in ids:
        pipe.exists(Keys.insight(event_id))
        pipe.exists(ClusterKeys.lease(event_id))
    flags = pipe.execute()
    return sum(
        1 for stored, leased in zip(flags[::2], flags[1::2], strict=True) if stored and leased
    )


def kill_during_a_write(worker: WorkerProcess, client: RedisClient, ids: list[str]) -> int:
    """SIGKILL ``worker`` while one of its writes is in progress; the writes it cut short.

    A write seen in progress may be finished by the time a signal lands, so the worker is
    frozen first and the writes counted again: frozen, it sends nothing more (what it sent
    is answered within the settle time), so what is still in progress then is cut short.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not writes_in_progress(client, ids):
            continue
        worker.freeze()
        time.sleep(FREEZE_SETTLE_SECONDS)
        if writes_in_progress(client, ids):
            worker.kill()
            return writes_in_progress(client, ids)
        worker.thaw()
    raise AssertionError("no write of the worker was ever in progress to be cut short")


def kill_mid_drain_and_restart(
    client: RedisClient, workers: Workers, *, seed: int | None = None
) -> None:
    """Kill the worker in a write: the first one (no ``seed``), or the first one after the
    point of the drain ``seed`` picks; then a restart must complete every event, once."""
    ids = events(client, EVENTS)
    first = workers.start("w-crash", worker_concurrency=16)
    if seed is not None:
        rng = random.Random(seed)
        threshold = rng.randint(3, 40)
        wait_until(
            lambda: len(outcomes(client, ids)["insights"]) >= threshold, within=60, what="progress"
        )
        time.sleep(rng.uniform(0.0, 0.05))
    cut = kill_during_a_write(first, client, ids)
    print(f"seed {seed}: {cut} write(s) cut short by the kill")
    assert cut >= 1, "the kill cut no write short: the resumption went untested"
    workers.start("w-crash", worker_concurrency=16)
    assert_every_event_written_once(client, ids)


def test_kill_9_mid_write_then_restart_leaves_every_event_written_once(client, workers):
    """kill -9 while a write is in progress: the restart completes every event, once."""
    kill_mid_drain_and_restart(client, workers)


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_kill_9_at_a_random_moment_then_restart_leaves_every_event_written_once(
    seed, client, workers
):
    """kill -9 at a random moment of the drain: the restart completes every event, once."""
    kill_mid_drain_and_restart(client, workers, seed=seed)


@pytest.mark.cluster
@pytest.mark.parametrize("seed", LONG_SEEDS)
def test_kill_9_at_random_moments_many_seeds(seed, client, workers):
    """The same, over many seeds (make test-cluster)."""
    kill_mid_drain_and_restart(client, workers, seed=seed)


def test_slots_moving_during_a_drain_lose_nothing(client, cluster, fake, workers):
    """A reshard moves 2000 slots (insight keys among them) while the worker writes."""
    fake.script(latency=0.1)  # a drain of some seconds: the reshard happens within it
    ids = events(client, EVENTS)
    slots = {client.keyslot(Keys.insight(event_id)) for event_id in ids}
    source, target = cluster.nodes[0], cluster.nodes[1]
    moving = [slot for slot in slots if cluster.node_for_slot(slot) is source]
    assert moving, "some insight keys must live on the node whose slots move"
    workers.start("w-moving", worker_concurrency=2)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 5, within=60, what="progress")
    cluster.move_slots(source, target, 2000)
    assert len(outcomes(client, ids)["insights"]) < len(ids), "the drain outlasts the reshard"
    assert_every_event_written_once(client, ids)
    assert any(cluster.node_for_slot(slot) is target for slot in moving)


def test_a_primary_killed_and_restarted_during_a_drain_is_waited_out(
    client, cluster, fake, workers
):
    """kill -9 of the primary holding the inbound stream; back 3 s later: nothing lost."""
    fake.script(latency=0.1)
    ids = events(client, EVENTS)
    node = cluster.node_for_slot(client.keyslot(STREAM))
    worker = workers.start("w-outage", worker_concurrency=2)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 5, within=60, what="progress")
    assert len(outcomes(client, ids)["insights"]) < len(ids), "the outage is within the drain"
    node.kill()
    time.sleep(3.0)
    node.start()
    cluster.wait_ok()
    assert_every_event_written_once(client, ids)
    assert worker.process is not None
    assert worker.process.poll() is None  # it never exited
    log = worker.log()
    assert "redis_unavailable" in log  # it waited the outage out, in place:
    failed = [  # no event failed on the way (the subscriber's own read errors aside)
        line for line in log.splitlines() if '"level": "error"' in line and "fetch" not in line
    ]
    assert failed == []
    consumers = {c["name"].decode() for c in client.xinfo_consumers(STREAM, GROUP)}
    assert "w-outage" in consumers
