"""Which Redis the demo runs on: a cluster of its own, the one at REDIS_URL, or its own server.

``--cluster`` starts a Redis Cluster; otherwise the Redis at ``REDIS_URL`` when it answers
(and ``--own-redis`` was not given); otherwise a server started for the run
(``app.cli.demo.server``), except with ``--publish-only``, which needs the Redis a worker
reads. What is started stays up until the caller's exit stack closes.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import AnyUrl
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.cli.demo.cluster import launch_cluster
from app.cli.demo.server import LaunchedServer, ServerUnavailable, launch_server
from app.settings import RedisMode

__all__ = ["DemoRedis", "address", "choose_redis"]

T = TypeVar("T")


@dataclass(frozen=True)
class DemoRedis:
    """The Redis of a run, and the header's line about it."""

    url: str
    mode: RedisMode
    server: LaunchedServer | None  # the server (a cluster's seed) this run started, if any
    description: str


def address(url: str) -> str:
    """host:port/db of a Redis URL, without the credentials it may carry."""
    parsed = AnyUrl(url)
    if parsed.scheme == "unix":
        return f"unix:{parsed.path}"
    database = (parsed.path or "/0").lstrip("/") or "0"
    return f"{parsed.host}:{parsed.port or 6379}/{database}"


async def _redis_answers(url: str) -> bool:
    """True when a Redis answers PING at ``url``; False when nothing listens there."""
    client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        await client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return False
    finally:
        await client.aclose()
    return True


def _start(
    stack: contextlib.AsyncExitStack,
    launch: Callable[[], contextlib.AbstractContextManager[T]],
    why: str,
) -> T:
    """What ``launch()`` starts, stopped when ``stack`` closes; a failure says ``why``."""
    try:
        # Blocks the loop until what it starts answers (a server in tens of ms): nothing
        # else runs yet.
        return stack.enter_context(launch())
    except ServerUnavailable as exc:
        raise ServerUnavailable(f"{why}, and {exc}") from exc


async def choose_redis(
    options: argparse.Namespace,
    configured: str,
    mode: RedisMode,
    stack: contextlib.AsyncExitStack,
) -> DemoRedis | None:
    """The Redis of this run, started on ``stack`` if the demo starts one; None when
    ``--publish-only`` finds nothing at ``configured`` (``REDIS_URL``, in ``mode``).

    Raises :class:`ServerUnavailable` when a server or cluster was needed and could not start.
    """
    if options.cluster:
        cluster = _start(stack, launch_cluster, "--cluster")
        server = cluster.seed
        return DemoRedis(
            cluster.url,
            RedisMode.CLUSTER,
            server,
            f"--cluster: started a Redis Cluster of {len(cluster.nodes)} {server.name} "
            f"{server.version} primaries, seed {address(cluster.url)}",
        )
    if not options.own_redis and await _redis_answers(configured):
        return DemoRedis(configured, mode, None, f"{address(configured)} (REDIS_URL answers)")
    if options.publish_only:
        return None
    why = "--own-redis"
    if not options.own_redis:
        why = f"nothing answers at {address(configured)} (REDIS_URL)"
    server = _start(stack, launch_server, why)
    return DemoRedis(
        server.url,
        RedisMode.STANDALONE,
        server,
        f"{why}: started {server.name} {server.version} at {address(server.url)}",
    )
