"""Shared fixtures: a private Redis per session, a fake Groq per test, worker settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from tests.support.fake_groq import API_KEY, FakeGroq
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own for the session: tests flush only what they made."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
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


@pytest.fixture
def make_settings(redis_server: RedisServer) -> Callable[..., Settings]:
    """Settings of a worker under test; keyword arguments override any of them."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
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
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Start a FastStream app in this loop (hooks included) and stop it on exit."""
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
