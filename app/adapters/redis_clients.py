"""The worker's Redis clients, for one Redis or a Redis Cluster (``REDIS_MODE``).

Every part of the worker and of ``groq-worker`` that talks to Redis gets its client
here, so cluster mode reaches all of them: ``Redis`` on a single server, redis-py's
``RedisCluster`` (seeded by ``REDIS_URL``, which discovers the other nodes and follows
MOVED/ASK) in a cluster. Both answer the single-key commands the same way; what differs
(multi-key scripts and transactions) is handled where it occurs.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.settings import RedisMode

__all__ = ["RedisClient", "connect_redis", "is_cluster"]

RedisClient: TypeAlias = Redis | RedisCluster
"""A client of either mode (the commands on one key are the same)."""


def connect_redis(url: str, mode: RedisMode, **options: Any) -> RedisClient:
    """A client of ``url`` (``REDIS_URL``) in ``mode`` (``REDIS_MODE``); nothing connects
    until it is first used."""
    if mode is RedisMode.CLUSTER:
        # A cluster client opens connections to several nodes: keep-alive and health
        # checks are per connection, as on one server.
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


def is_cluster(redis: RedisClient) -> bool:
    return isinstance(redis, RedisCluster)
