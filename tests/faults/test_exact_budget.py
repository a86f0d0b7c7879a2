"""One budget charge per event through a crash, on one Redis and on a Redis Cluster.

A tenant sends exactly its hourly budget. The worker is killed (kill -9) in the middle of
the drain with ``WORKER_CONCURRENCY`` events in flight, each already admitted and charged;
another worker (another ``WORKER_ID``) claims them and finishes. Every event must get its
insight and the tenant's counter must end at exactly the budget: a redelivered event is
not charged again (which would refuse the last events of the hour as ``rate_limited``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.domain.keys import Keys
from tests.faults.harness import (
    STREAM,
    FakeGroqProcess,
    RedisClient,
    RedisTarget,
    Workers,
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
WORKER_ENV = {  # tests/faults/conftest.py
    "worker_concurrency": CONCURRENCY,
    "insight_budget_per_hour_per_tenant": BUDGET,
}


@pytest.fixture(params=["standalone", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> Iterator[RedisTarget]:
    """A Redis of the test's own: a single server, or a three-primary cluster."""
    if request.param == "cluster":
        with RedisCluster() as cluster:
            yield RedisTarget(cluster.url, "cluster")
        return
    with RedisServer() as server:
        yield RedisTarget(server.url)


def settled(client: RedisClient, ids: list[str]) -> dict[str, Any] | None:
    """The outcomes once every entry was delivered and acknowledged (whatever its outcome)."""
    state = outcomes(client, ids)
    [group] = client.xinfo_groups(STREAM)
    done = state["pending"] == 0 and group["lag"] == 0 and state["jobs"] == 0
    return state if done else None


def test_a_tenant_sending_exactly_its_budget_through_a_kill_gets_every_insight(
    client: RedisClient, fake: FakeGroqProcess, workers: Workers
) -> None:
    """kill -9 with a full slate in flight, another worker finishes: N insights, counter N."""
    ids = events(client, BUDGET)
    first = workers.start("w-killed")
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
    in_flight = state["pending"] + state["running"]  # entries read, jobs handed out
    assert in_flight >= CONCURRENCY, "the kill leaves the events in flight unfinished"
    assert len(state["insights"]) < BUDGET

    workers.start("w-finisher", claim_idle_seconds=2)
    state = wait_until(lambda: settled(client, ids), within=90, what="every event settled")
    assert state["insights"] == set(ids), "every event of the budget enriched"
    assert state["dead"] == []
    assert int(client.get(Keys.rate_limit("acme"))) == BUDGET  # each event charged once
    assert client.scard(Keys.charged("acme")) == BUDGET
