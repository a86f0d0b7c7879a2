"""What FastStream 0.7.8 does not offer yet, worked around in one place.

Each workaround below names the upstream behaviour it works around, and
``tests/unit/test_faststream_workarounds.py`` fails loudly when that behaviour changes
(the workaround may then be unnecessary, or broken). Nothing else in ``app/`` reaches
into FastStream's private modules.

* ``GroupHealingBroker``: a ``RedisBroker`` whose XREADGROUP recreates a vanished
  consumer group at ``0`` and reads on. FastStream stops the subscriber and exits the
  app on NOGROUP (Redis restarted empty, stream deleted): upstream chose "fail fast,
  let the orchestrator restart" (ag2ai/faststream#2855; the open bug is
  ag2ai/faststream#2611, the loop it leaves ag2ai/faststream#2945). A worker that exits
  on every Redis restart is restarted into the same empty Redis anyway, so we heal in
  place. No public hook exists to swap the broker's client: this overrides the
  broker's ``_make_connection_state`` and uses FastStream's ``_get_driver_info``.
  ``GroupHealingClusterBroker`` does the same for ``RedisClusterBroker`` (cluster mode):
  its state builds the ``RedisCluster`` as FastStream's ``RedisClusterConnectionState``
  does, with the healing XREADGROUP. The rest of cluster mode needs no workaround:
  ``RedisClusterBroker`` reads streams with XREADGROUP and acks with XACK through its
  ``RedisCluster``, which follows MOVED/ASK; only its publishers ignore a ``pipeline``
  (there is no cross-slot transaction to join), so the cluster store publishes alone.
* ``EventLoopContext``: ``faststream.Context`` resolved on the event loop. The public
  ``Context()`` is a factory of a private class whose ``use`` is synchronous, so
  FastDepends runs it in a worker thread (``anyio.to_thread.run_sync``): about 0.1 ms of
  CPU per parameter per message on this hardware. An ``async`` ``use`` is
  awaited in place; the lookup itself is a dictionary read.
* ``UncopiedStreamSub``: ``StreamSub`` that is not deep-copied on every access when
  there is no prefix. FastStream reads a subscriber's or publisher's stream through
  ``StreamSub.add_prefix``, which deep-copies it: three deep copies per event for a
  prefix that is always empty here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Self

from faststream._internal.context import Context as ContextField
from faststream.redis import RedisBroker, RedisClusterBroker, StreamSub
from faststream.redis.configs.state import (
    RedisClusterConnectionState,
    RedisConnectionState,
    _get_driver_info,
)
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from app.domain.text import as_text

__all__ = [
    "EventLoopContext",
    "GroupHealingBroker",
    "GroupHealingClusterBroker",
    "GroupHealingRedis",
    "GroupHealingRedisCluster",
    "UncopiedStreamSub",
    "ensure_group",
]

log = logging.getLogger("acp.groq_worker.redis")


async def ensure_group(redis: Redis | RedisCluster, stream: str, group: str) -> bool:
    """Create ``group`` on ``stream`` at ID 0 (MKSTREAM); False if it already existed."""
    try:
        await redis.xgroup_create(name=stream, groupname=group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


async def _recreate_groups(
    redis: Redis | RedisCluster,
    groupname: str,
    streams: dict[Any, Any],
    on_group_recreated: Callable[[str, str], None] | None,
) -> list[Any]:
    """After NOGROUP: the group recreated at ``0`` on each stream; nothing read this time."""
    for stream in streams:
        name = as_text(stream)
        if await ensure_group(redis, name, groupname):
            log.warning(
                "consumer group %s on %s was gone (NOGROUP); recreated at 0", groupname, name
            )
            if on_group_recreated is not None:
                on_group_recreated(name, groupname)
    return []


class GroupHealingRedis(Redis):
    """A ``Redis`` whose XREADGROUP recreates a vanished consumer group at ``0``."""

    on_group_recreated: Callable[[str, str], None] | None = None

    async def xreadgroup(
        self, groupname: str, consumername: str, streams: dict[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return await super().xreadgroup(groupname, consumername, streams, *args, **kwargs)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        return await _recreate_groups(self, groupname, streams, self.on_group_recreated)


class GroupHealingRedisCluster(RedisCluster):
    """A ``RedisCluster`` whose XREADGROUP recreates a vanished consumer group at ``0``."""

    on_group_recreated: Callable[[str, str], None] | None = None

    async def xreadgroup(
        self, groupname: str, consumername: str, streams: dict[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return await super().xreadgroup(groupname, consumername, streams, *args, **kwargs)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        return await _recreate_groups(self, groupname, streams, self.on_group_recreated)


class _GroupHealingConnectionState(RedisConnectionState):
    __slots__ = ()

    async def connect(self) -> Redis:
        pool = ConnectionPool(**(self._options | _get_driver_info()))
        client = GroupHealingRedis.from_pool(pool)
        self._client = client
        self._connected = True
        return client


class GroupHealingBroker(RedisBroker):
    """``RedisBroker`` whose connection is a ``GroupHealingRedis``."""

    def _make_connection_state(
        self, connection_options: dict[str, Any], kwargs: dict[str, Any]
    ) -> RedisConnectionState:
        return _GroupHealingConnectionState(connection_options)


class _GroupHealingClusterConnectionState(RedisClusterConnectionState):
    __slots__ = ()

    async def connect(self) -> RedisCluster:
        if self._connected:
            return self.client
        options = {k: v for k, v in self._options.items() if v is not None}
        client = GroupHealingRedisCluster(**(options | _get_driver_info()))
        self._client = client
        self._connected = True
        return client


class GroupHealingClusterBroker(RedisClusterBroker):
    """``RedisClusterBroker`` whose connection is a ``GroupHealingRedisCluster``."""

    def _make_connection_state(
        self, connection_options: dict[str, Any], kwargs: dict[str, Any]
    ) -> RedisConnectionState | RedisClusterConnectionState:
        return _GroupHealingClusterConnectionState(connection_options)


class EventLoopContext(ContextField):
    """``Context(name)`` for a handler parameter, resolved without a thread hop."""

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        resolved: dict[str, Any] = super().use(**kwargs)
        return resolved


class UncopiedStreamSub(StreamSub):
    """``StreamSub`` returned as is by ``add_prefix("")`` instead of deep-copied."""

    def add_prefix(self, prefix: str) -> Self:
        return self if not prefix else super().add_prefix(prefix)
