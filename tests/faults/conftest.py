"""Fault-test fixtures: each test gets its own Redis, fake Groq process and workers.

* ``redis_target``: the Redis the test's workers use; by default a redis-server of the
  test's own (``redis_server``). A module overrides it for a Redis Cluster.
* ``client``: a client of that Redis for the test's checks.
* ``fake``: a fake Groq process; a module sets ``FAKE_LATENCY`` (seconds per model
  answer), 0.3 otherwise.
* ``workers``: ``workers.start(worker_id, **settings)`` starts ``faststream run app:app``
  on that Redis and that fake, with the module's ``WORKER_ENV`` (default settings of its
  workers) under the settings given; whatever it started is killed at the test's end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import FakeGroqProcess, RedisClient, RedisTarget, Workers
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server per fault test: each one pauses, restarts or fills its own."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_target(redis_server: RedisServer) -> RedisTarget:
    """The Redis of the test's workers: its own redis-server, unless the module says other."""
    return RedisTarget(redis_server.url)


@pytest.fixture
def client(redis_target: RedisTarget) -> Iterator[RedisClient]:
    connection = redis_target.connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeGroqProcess]:
    with FakeGroqProcess(latency=getattr(request.module, "FAKE_LATENCY", 0.3)) as process:
        yield process
        # A script Groq could not answer (see tests/support/fake_groq.py) is the test's bug.
        errors = process.stats()["script_errors"]
        assert not errors, f"scripted answers Groq cannot give: {errors}"


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, redis_target: RedisTarget, fake: FakeGroqProcess
) -> Iterator[Workers]:
    """Worker processes on the test's Redis and fake Groq; any still running at its end are
    killed."""
    with Workers(redis_target, fake, getattr(request.module, "WORKER_ENV", None)) as started:
        yield started
