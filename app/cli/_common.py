"""What the operator commands share: settings, a Redis client, one-line failures."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError

from app.adapters.redis_clients import RedisClient, connect_redis
from app.adapters.redis_errors import unreachable
from app.settings import Settings, SettingsError, load_settings

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "at_least",
    "redis_address",
    "run_with_redis",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def redis_address(settings: Settings) -> str:
    """Where Redis is, without the credentials a URL may carry."""
    url = settings.redis_url
    if url.scheme == "unix":
        return f"unix:{url.path}"
    database = (url.path or "/0").lstrip("/") or "0"
    return f"{url.host}:{url.port or 6379}/{database}"


def run_with_redis(
    command: str, work: Callable[[Settings, RedisClient], Awaitable[T]]
) -> tuple[int, T | None]:
    """Load settings, open Redis, run ``work``; failures become one line on stderr.

    Returns ``(exit code, result)``: ``(0, result)`` on success, ``(2, None)`` for a bad
    setting, ``(1, None)`` when Redis cannot be reached or answers with an error.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"groq-worker {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE, None

    async def with_client() -> T:
        redis = connect_redis(
            str(settings.redis_url),
            settings.redis_mode,
            socket_connect_timeout=3.0,
            socket_timeout=10.0,
        )
        try:
            return await work(settings, redis)
        finally:
            await redis.aclose()

    try:
        return EXIT_OK, asyncio.run(with_client())
    except (RedisError, RedisClusterException, OSError) as exc:
        if unreachable(exc):
            problem = f"cannot reach Redis at {redis_address(settings)} ({_one_line(exc)})"
        else:
            problem = (
                f"Redis at {redis_address(settings)} answered with an error ({_one_line(exc)})"
            )
    print(f"groq-worker {command}: {problem}", file=sys.stderr)
    return EXIT_PROBLEM, None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no smaller than ``minimum``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
        return value

    return whole_number
