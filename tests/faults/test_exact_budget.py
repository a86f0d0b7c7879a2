"""One budget charge per event through a crash, on one Redis and on a Redis Cluster.

A tenant sends exactly its hourly budget. The worker is killed (kill -9) in the middle of
the drain with ``WORKER_CONCURRENCY`` events in flight, each already admitted and charged;
another worker (another ``WORKER_ID``) claims them and finishes. Every event must get its
insight and the tenant's counter must end at exactly the budget: a redelivered event is
not charged again (which would refuse the last events of the hour as ``rate_limited``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis as sync_redis

from app.domain.keys import Keys
from tests.faults.harness import (
    STREAM,
    FakeGroqProcess,
    WorkerProcess,
    events,
    outcomes,
    wait_until,
)
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.cluster_smoke]

FAKE_LATENCY = 0.3
BUDGET = 120
CONCURRENCY = 16


@dataclass
class Target:
    url: str
    mode: str
    client: Any


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A Redis of the test's own: a single server, or a three-primary cluster."""
    if request.param == "cluster":
        with RedisCluster() as cluster:
            client: Any = sync_redis.RedisCluster.from_url(cluster.url)
            try:
                yield Target(cluster.url, "cluster", client)
            finally:
                client.close()
        return
    with RedisServer() as server:
        client = sync_redis.Redis.from_url(server.url)
        try:
            yield Target(server.url, "standalone", client)
        finally:
            client.close()


def start(
    target: Target, fake: FakeGroqProcess, workers: list[WorkerProcess], worker_id: str, **env: Any
) -> WorkerProcess:
    worker = WorkerProcess(
        target.url,
        fake.base_url,
        worker_id=worker_id,
        redis_mode=target.mode,
        worker_concurrency=CONCURRENCY,
        insight_budget_per_hour_per_tenant=BUDGET,
        **env,
    ).start()
    workers.append(worker)
    return worker


def settled(client: Any, ids: list[str]) -> dict[str, Any] | None:
    """The outcomes once every entry was delivered and acknowledged (whatever its outcome)."""
    state = outcomes(client, ids)
    [group] = client.xinfo_groups(STREAM)
    return state if state["pending"] == 0 and group["lag"] == 0 else None


def test_a_tenant_sending_exactly_its_budget_through_a_kill_gets_every_insight(
    target: Target, fake: FakeGroqProcess, workers: list[WorkerProcess]
) -> None:
    """kill -9 with a full slate in flight, another worker finishes: N insights, counter N."""
    client = target.client
    ids = events(client, BUDGET)
    first = start(target, fake, workers, "w-killed")
    wait_until(
        lambda: (
            len(outcomes(client, ids)["insights"]) >= 40
            and fake.stats()["in_flight"] >= CONCURRENCY
        ),
        within=60,
        step=0.02,
        what="40 insights and a full slate of model calls in flight",
    )
    first.kill()
    state = outcomes(client, ids)
    assert state["pending"] >= CONCURRENCY, "the kill leaves the events in flight pending"
    assert len(state["insights"]) < BUDGET

    start(target, fake, workers, "w-finisher", claim_idle_seconds=2)
    state = wait_until(lambda: settled(client, ids), within=90, what="every event settled")
    assert state["insights"] == set(ids), "every event of the budget enriched"
    assert state["dead"] == []
    assert int(client.get(Keys.rate_limit("acme"))) == BUDGET  # each event charged once
    assert client.scard(Keys.charged("acme")) == BUDGET
