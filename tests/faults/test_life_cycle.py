"""A deployment's life: rolling deploys under new pod names, consumers that leave or die.

Real worker processes (``faststream run app:app``), a private redis-server and the fake
Groq, checked from outside through Redis and the fake's request log.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.harness import (
    GROUP,
    STREAM,
    FakeGroqProcess,
    RedisClient,
    Workers,
    events,
    outcomes,
    wait_until,
)
from tests.support.redis_server import free_port

pytestmark = pytest.mark.faults

FAKE_LATENCY = 0.8  # seconds per model answer (tests/faults/conftest.py)

CLAIM_IDLE_SECONDS = 60  # the default: what a stranded entry would wait for
NEVER_IDLE_SECONDS = 3600  # an entry would not go idle within a test
REDIS_RETRY_CAP_SECONDS = 5.0  # the longest wait between tries of a refused Redis step
WORKER_ENV = {"claim_idle_seconds": CLAIM_IDLE_SECONDS}  # tests/faults/conftest.py


def consumers(client) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"]) for c in client.xinfo_consumers(STREAM, GROUP)}


def test_rolling_deploy_hands_read_ahead_entries_to_the_next_pod_at_once(client, fake, workers):
    """SIGTERM on pod-a: pod-b, under a new name, finishes its entries without waiting for
    them to go idle (an hour here: only the hand-back can make them claimable in time).
    EVENT_ORDER=fifo, where what a worker read ahead stays pending in the stream."""
    ids = events(client, 300)
    hour = {
        "worker_concurrency": 32,
        "claim_idle_seconds": NEVER_IDLE_SECONDS,
        "event_order": "fifo",
    }
    pod_a = workers.start("pod-a", **hour)
    wait_until(lambda: fake.stats()["requests"] >= 20, within=60, what="20 calls by pod-a")
    assert pod_a.terminate(within=30) == 0
    held = consumers(client).get("pod-a", 0)
    assert held > 0, "pod-a left read-ahead entries pending: the case this test is about"
    handed_back = [line for line in pod_a.log().splitlines() if "consumer_leaving" in line]
    assert [json.loads(line)["handed_back"] for line in handed_back] == [held]

    pod_b = workers.start("pod-b", **hour)
    # A bound on a hang (the backlog takes seconds), far under the hour the entries would
    # otherwise wait to go idle.
    wait_until(
        lambda: len(outcomes(client, ids)["insights"]) == len(ids), within=120, what="backlog"
    )
    claims = [
        json.loads(line) for line in pod_b.log().splitlines() if "idle_entries_claimed" in line
    ]
    assert sum(claim["entries"] for claim in claims) == held, "pod-b claimed what pod-a handed back"

    state = outcomes(client, ids)
    assert state["dead"] == []
    calls = Counter(fake.agents_requested())
    assert set(calls) == set(ids), "no call lost"
    assert max(calls.values()) == 1, "no event enriched twice"
    wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, within=10, what="acks")
    assert consumers(client).get("pod-a", 0) == 0, "pod-a holds nothing"
    assert '"event": "consumer_leaving"' in pod_a.log()


def test_rolling_deploy_gives_the_scheduled_events_to_the_next_pod_at_once(client, fake, workers):
    """EVENT_ORDER=priority: what pod-a read waits in the scheduler, and at SIGTERM the
    jobs it was running go back at once (no delivery counted): pod-b, under a new name,
    finishes them all without waiting an hour for a lease to run out, none asked twice."""
    ids = events(client, 300)
    hour = {"worker_concurrency": 32, "claim_idle_seconds": NEVER_IDLE_SECONDS}
    pod_a = workers.start("pod-a", **hour)
    wait_until(lambda: fake.stats()["requests"] >= 20, within=60, what="20 calls by pod-a")
    assert pod_a.terminate(within=30) == 0
    state = outcomes(client, ids)
    assert state["jobs"] > 0, "pod-a left events waiting: the case this test is about"
    assert state["running"] == 0, "pod-a runs nothing it did not give back"
    held = consumers(client).get("pod-a", 0)  # entries read, not yet admitted: handed back
    handed_back = [line for line in pod_a.log().splitlines() if "consumer_leaving" in line]
    assert [json.loads(line)["handed_back"] for line in handed_back] == [held]

    workers.start("pod-b", **hour)
    wait_until(
        lambda: len(outcomes(client, ids)["insights"]) == len(ids), within=120, what="backlog"
    )
    state = outcomes(client, ids)
    assert state["dead"] == []
    assert state["jobs"] == 0
    wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, within=10, what="acks")
    assert consumers(client).get("pod-a", 0) == 0, "pod-a holds nothing"
    calls = Counter(fake.agents_requested())
    assert set(calls) == set(ids), "no call lost"
    assert max(calls.values()) == 1, "no event enriched twice"


def test_a_consumer_that_holds_nothing_leaves_the_group_at_a_graceful_stop(client, workers):
    """A worker stopped with nothing pending removes its consumer from the group."""
    ids = events(client, 10)
    worker = workers.start("pod-idle", worker_concurrency=32)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) == 10, within=30, what="insights")
    wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, within=10, what="acks")
    assert "pod-idle" in consumers(client)
    assert worker.terminate(within=30) == 0
    assert "pod-idle" not in consumers(client)


def test_consumers_of_dead_processes_are_pruned_once_idle_and_empty(client, workers):
    """kill -9 leaves a consumer; a live worker removes it once idle, never one holding entries."""
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer(STREAM, GROUP, "ghost-empty")
    # a dead consumer still holding an entry must stay until its entry is claimed
    events(client, 1, prefix="held")
    client.xreadgroup(GROUP, "ghost-holding", {STREAM: ">"}, count=1)
    time.sleep(1.5)
    live = workers.start("pod-live", consumer_prune_idle_seconds=1, claim_idle_seconds=3600)
    wait_until(lambda: "ghost-empty" not in consumers(client), within=30, what="the prune")
    remaining = consumers(client)
    assert remaining.get("ghost-holding") == 1, "a consumer holding an entry is kept"
    pruned = [line for line in live.log().splitlines() if "departed_consumers_pruned" in line]
    assert pruned, "the prune is logged"
    assert all("pod-live" not in line for line in pruned), "a worker never prunes itself"


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _refusal_drill(
    client: RedisClient,
    fake: FakeGroqProcess,
    workers: Workers,
    *,
    refuse: Callable[[], Any],
    accept: Callable[[], Any],
    reason: str,
) -> None:
    """Redis refuses writes for 20 s mid-drain, then accepts them again.

    The worker must wait it out in place: pending stays within what it holds (in flight
    plus read ahead), readiness says why, no event is dead-lettered or delivered more than
    twice, and it resumes as soon as Redis accepts writes: its waits between tries are
    capped (REDIS_RETRY_CAP_SECONDS), so the next try comes within seconds.
    """
    fake.script(latency=0.05)
    ids = events(client, 3000)
    port = free_port()
    concurrency = 16
    worker = workers.start(
        "pod-drill",
        worker_concurrency=concurrency,
        metrics_port=port,
        insight_budget_per_hour_per_tenant=100_000,  # one tenant sends all 3,000
    )
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 200, within=60, what="200")
    refuse()
    try:
        # What the worker can hold: its handlers (with EVENT_ORDER=priority, the default,
        # twice its slots: the others schedule what finds no slot), FastStream's buffer of
        # as many, one read of as many.
        bound = 3 * 2 * concurrency
        deadline = time.monotonic() + 20
        most_pending = most_deliveries = 0
        statuses = []
        while time.monotonic() < deadline:
            pending = client.xpending_range(STREAM, GROUP, min="-", max="+", count=1000)
            most_pending = max(most_pending, len(pending))
            most_deliveries = max([most_deliveries, *(p["times_delivered"] for p in pending)])
            statuses.append(ready(port))
            time.sleep(0.5)
    finally:
        accept()
    accepted = time.monotonic()
    stored = len(outcomes(client, ids)["insights"])

    def written_again() -> bool:
        now_stored = len(outcomes(client, ids)["insights"])
        return now_stored > stored or now_stored == len(ids)

    wait_until(written_again, within=60, what="a write")  # a bound on a hang, not a speed
    wait_until(
        lambda: len(outcomes(client, ids)["insights"]) == len(ids), within=120, what="backlog"
    )
    print(
        f"\n{reason}: backlog done {time.monotonic() - accepted:.1f}s after Redis accepted writes"
    )
    waits = [
        json.loads(line)["retry_in"]
        for line in worker.log().splitlines()
        if '"event": "redis_unavailable"' in line
    ]
    assert waits, "the worker met the refusals"
    assert max(waits) <= REDIS_RETRY_CAP_SECONDS, "a wait between tries past the cap"
    assert most_pending <= bound, f"pending reached {most_pending} (bound {bound})"
    assert most_deliveries <= 2
    refused = [body for status, body in statuses[6:] if status == 503]
    assert len(refused) == len(statuses[6:]), "not ready while Redis refuses writes"
    assert any(reason in json.dumps(body) for body in refused), refused[:1]
    state = outcomes(client, ids)
    assert state["dead"] == []
    assert max(Counter(fake.agents_requested()).values()) == 1
    wait_until(lambda: ready(port)[0] == 200, within=15, what="ready again")


def test_redis_out_of_memory_mid_drain_is_waited_out_in_place(client, fake, workers):
    """OOM under noeviction for 20 s: no event is burned, reading stops, full speed after."""
    client.config_set("maxmemory-policy", "noeviction")
    _refusal_drill(
        client,
        fake,
        workers,
        refuse=lambda: client.config_set("maxmemory", 1),
        accept=lambda: client.config_set("maxmemory", 0),
        reason="OOM",
    )


def test_redis_demoted_to_a_replica_mid_drain_is_waited_out_in_place(client, fake, workers):
    """READONLY (REPLICAOF a primary that is not there) for 20 s, then promoted back."""
    nowhere = free_port()
    _refusal_drill(
        client,
        fake,
        workers,
        refuse=lambda: client.execute_command("REPLICAOF", "127.0.0.1", str(nowhere)),
        accept=lambda: client.execute_command("REPLICAOF", "NO", "ONE"),
        reason="READONLY",
    )
