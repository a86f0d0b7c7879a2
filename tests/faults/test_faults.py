"""Fault tests: real worker processes, a private redis-server each, a fake Groq process.

Each test starts the worker as a user would (``faststream run app:app``), breaks something
from outside, and checks from Redis and the fake's request log that every event ended in
exactly one outcome.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import redis as sync_redis

from app.domain.keys import Keys
from tests.faults.harness import GROUP, STREAM, RedisClient, events, outcomes, wait_until

pytestmark = pytest.mark.faults


def all_enriched(client: RedisClient, ids: list[str]) -> dict[str, Any] | None:
    state = outcomes(client, ids)
    return state if len(state["insights"]) == len(ids) and state["pending"] == 0 else None


def assert_charged_once(client: sync_redis.Redis, ids: list[str]) -> None:
    """The tenant's budget counted each event once, redelivered or not."""
    assert client.get(Keys.rate_limit("acme")) == str(len(ids)).encode()
    assert client.scard(Keys.charged("acme")) == len(ids)


def test_kill_9_mid_flight_then_restart_under_the_same_id(client, workers):
    """A killed worker's in-flight entries are processed by its restart; nothing is lost."""
    ids = events(client, 40)
    first = workers.start("w-1", worker_concurrency=8)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 8, within=30, what="progress")
    first.kill()
    state = outcomes(client, ids)
    assert state["pending"] + state["running"] > 0, "the kill leaves events in flight"
    workers.start("w-1", worker_concurrency=8)
    state = wait_until(lambda: all_enriched(client, ids), within=60, what="all 40 insights")
    assert state["dead"] == []
    assert_charged_once(client, ids)


def test_kill_9_then_another_worker_claims_and_finishes(client, workers):
    """Entries of a dead consumer are claimed by a worker with another id after the idle time."""
    ids = events(client, 30)
    first = workers.start("w-dead", worker_concurrency=8)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 5, within=30, what="progress")
    first.kill()
    workers.start("w-alive", worker_concurrency=8, claim_idle_seconds=2)
    state = wait_until(lambda: all_enriched(client, ids), within=60, what="all 30 insights")
    assert state["dead"] == []
    assert_charged_once(client, ids)
    consumers = {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(STREAM, GROUP)}
    assert consumers["w-dead"] == 0


def test_sigterm_mid_flight_finishes_in_flight_work_and_exits_0(client, fake, workers):
    """SIGTERM: in-flight calls finish and are written, unstarted entries stay pending, exit 0."""
    fake.script(latency=1.0)
    ids = events(client, 40)
    worker = workers.start("w-term", worker_concurrency=8)
    wait_until(lambda: fake.stats()["in_flight"] >= 4, within=30, what="calls in flight")
    assert worker.terminate(within=60) == 0
    requested = set(fake.agents_requested())
    state = outcomes(client, ids)
    assert requested, "some calls were made"
    assert requested <= state["insights"], "every call that was made has its insight"
    assert state["dead"] == []
    # what stays pending was read ahead but never started: it goes to the next worker
    pending = client.xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    pending_events = {
        json.loads(client.xrange(STREAM, p["message_id"], p["message_id"])[0][1][b"payload"])[
            "event_id"
        ]
        for p in pending
    }
    assert pending_events.isdisjoint(requested)
    log = worker.log()
    assert "Traceback" not in log
    workers.start("w-term", worker_concurrency=8)
    wait_until(lambda: all_enriched(client, ids), within=60, what="the rest after restart")


def test_redis_frozen_for_5_seconds_is_survived(client, redis_server, fake, workers):
    """SIGSTOP on Redis for 5 s: the worker waits, reconnects and finishes everything."""
    fake.script(latency=0.05)
    ids = events(client, 60)
    worker = workers.start("w-1", worker_concurrency=8)
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 5, within=30, what="progress")
    redis_server.pause()
    time.sleep(5)
    redis_server.resume()
    state = wait_until(lambda: all_enriched(client, ids), within=90, what="all 60 insights")
    assert state["dead"] == []
    assert worker.process is not None
    assert worker.process.poll() is None, "the worker never exits on a Redis fault"


def test_redis_restarted_empty_group_is_recreated(client, redis_server, fake, workers):
    """Redis restarted without persistence (NOGROUP): the group is recreated, events flow."""
    fake.script(latency=0.05)
    before = events(client, 10, prefix="before")
    worker = workers.start("w-1", worker_concurrency=4)
    wait_until(lambda: all_enriched(client, before), within=30, what="first batch")
    redis_server.restart()
    client.connection_pool.disconnect()
    assert client.exists(STREAM) == 0
    after = events(client, 10, prefix="after")
    state = wait_until(lambda: all_enriched(client, after), within=60, what="events after restart")
    assert state["dead"] == []
    assert worker.process is not None
    assert worker.process.poll() is None


def test_model_down_for_20_seconds_opens_the_breaker(client, fake, workers):
    """Fake Groq gone for 20 s: no flood of dead letters, everything finishes after it returns."""
    fake.script(latency=0.05)
    ids = events(client, 60)
    concurrency = 4
    workers.start(
        "w-1",
        worker_concurrency=concurrency,
        breaker_failure_threshold=3,
        breaker_cooldown_seconds=2,
        groq_timeout_seconds=2,
    )
    wait_until(lambda: len(outcomes(client, ids)["insights"]) >= 5, within=30, what="progress")
    fake.stop()
    time.sleep(20)
    dead_during_outage = len(outcomes(client, ids)["dead"])
    assert dead_during_outage <= concurrency, "only the events in flight when it opened"
    fake.start()
    state = wait_until(
        lambda: (
            (s := outcomes(client, ids))["pending"] == 0
            and len(s["insights"]) + len(s["dead"]) == len(ids)
            and s
        ),
        within=90,
        what="every event to end",
    )
    assert len(state["dead"]) == dead_during_outage
    assert set(state["dead"]).isdisjoint(state["insights"])


def test_two_workers_in_one_group_enrich_each_event_once(client, fake, workers):
    """Two processes share the stream: every event is sent to the model exactly once."""
    fake.script(latency=0.2)
    first = workers.start("w-a", worker_concurrency=8)
    second = workers.start("w-b", worker_concurrency=8)
    # Both reading before the events arrive: on a loaded machine one process can start
    # seconds after the other, and the first would drain all 200 events alone.
    wait_until(
        lambda: all("started successfully" in w.log() for w in (first, second)),
        within=60,
        what="both workers started",
    )
    ids = events(client, 200)
    state = wait_until(lambda: all_enriched(client, ids), within=90, what="all 200 insights")
    for worker in (first, second):
        assert '"outcome": "enriched"' in worker.log(), "both workers took a share"
    assert state["dead"] == []
    calls = Counter(fake.agents_requested())
    assert set(calls) == set(ids)
    assert max(calls.values()) == 1
    consumers = {c["name"].decode() for c in client.xinfo_consumers(STREAM, GROUP)}
    assert consumers == {"w-a", "w-b"}
