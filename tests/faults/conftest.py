"""Fault-test fixtures: each test gets its own redis-server, fake Groq process and workers.

A module sets ``FAKE_LATENCY`` (seconds per model answer) for its fake; 0.3 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as sync_redis

from tests.faults.harness import FakeGroqProcess, WorkerProcess
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server per fault test: each one pauses, restarts or fills its own."""
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
def fake(request: pytest.FixtureRequest) -> Iterator[FakeGroqProcess]:
    process = FakeGroqProcess(latency=getattr(request.module, "FAKE_LATENCY", 0.3)).start()
    try:
        yield process
        # A script Groq could not answer (see tests/support/fake_groq.py) is the test's bug.
        errors = process.stats()["script_errors"]
        assert not errors, f"scripted answers Groq cannot give: {errors}"
    finally:
        process.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test started; any still running at its end are killed."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()
