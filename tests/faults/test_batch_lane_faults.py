"""The batch lane under kill -9: real worker processes, a real fake Groq process.

A worker killed after recording requests but before submitting them, or after submitting
a batch but before writing its answers: the next worker takes the lane lock over (after
``GROQ_BATCH_LOCK_SECONDS``), and every event gets exactly one insight, its request
submitted exactly once.
"""

from __future__ import annotations

import pytest
import redis as sync_redis

from app.domain.keys import Keys
from tests.faults.harness import FakeGroqProcess, events, outcomes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAKE_LATENCY = 0.0
COUNT = 20
WORKER_ENV = {  # the batch lane on, its lock and polls short (tests/faults/conftest.py)
    "groq_batch_severities": "low",
    "groq_batch_lock_seconds": 2,
    "groq_batch_poll_seconds": 0.2,
}


def lane_empty(client: sync_redis.Redis) -> bool:
    return not any(
        (
            client.hlen("acp:groq:batch:requests"),
            client.zcard("acp:groq:batch:waiting"),
            client.hlen("acp:groq:batch:batches"),
        )
    )


def settled(client: sync_redis.Redis, ids: list[str]) -> bool:
    done = outcomes(client, ids)
    return len(done["insights"]) == len(ids) and done["pending"] == 0 and lane_empty(client)


def assert_once_each(client: sync_redis.Redis, fake: FakeGroqProcess, ids: list[str]) -> None:
    submitted = fake.batches()["submitted_ids"]
    assert sorted(submitted) == sorted(ids)  # every request in exactly one batch
    assert client.xlen("acp:groq:insights:stream") == len(ids)  # each insight written once
    assert fake.stats()["requests"] == 0  # nothing needed the online lane
    assert client.get(Keys.rate_limit("acme")) == str(len(ids)).encode()  # each charged once
    assert client.scard(Keys.charged("acme")) == len(ids)


def test_killed_after_recording_before_submitting(client, fake, workers):
    """The requests wait in Redis (their entries acked); the next worker submits them."""
    first = workers.start("lane-a", groq_batch_max_wait_seconds=3600)
    ids = events(client, COUNT)
    wait_until(
        lambda: client.zcard("acp:groq:batch:waiting") == COUNT,
        within=30,
        what="every request recorded",
    )
    assert client.xpending("acp:groq_queue", "acp_insights_consumer_group")["pending"] == 0
    first.kill()
    assert fake.batches()["batches"] == []

    workers.start("lane-b", groq_batch_max_wait_seconds=0.5)
    wait_until(lambda: settled(client, ids), within=60, what="every insight written")
    assert_once_each(client, fake, ids)


def test_killed_after_submitting_before_writing(client, fake, workers):
    """The batch is at Groq and recorded; the next worker follows it and writes it."""
    fake.batches(hold=True)
    first = workers.start("lane-a", groq_batch_max_wait_seconds=0.5)
    ids = events(client, COUNT)
    wait_until(
        lambda: [b["status"] for b in fake.batches()["batches"]] == ["in_progress"],
        within=30,
        what="the batch submitted and in progress",
    )
    first.kill()
    assert all(client.exists(f"acp:groq:insight:{event_id}") == 0 for event_id in ids)
    fake.batches(hold=False)

    workers.start("lane-b", groq_batch_max_wait_seconds=0.5)
    wait_until(lambda: settled(client, ids), within=60, what="every insight written")
    assert_once_each(client, fake, ids)
    assert fake.batches()["uploads"] == 1  # followed, not submitted again
