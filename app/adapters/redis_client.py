"""Redis clients: the consumer group's creation, and a broker that survives NOGROUP.

FastStream creates the group at ``$`` (skipping a backlog) and stops the app when the
group vanishes at run time. We create the group ourselves at ``0`` before the subscriber
starts, and give the broker a client whose XREADGROUP recreates a vanished group (Redis
restarted empty, stream deleted) at ``0`` and reads on, instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faststream.redis import RedisBroker
from faststream.redis.configs.state import RedisConnectionState, _get_driver_info
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ResponseError

__all__ = ["GroupHealingBroker", "GroupHealingRedis", "ensure_group"]

log = logging.getLogger("acp.groq_worker.redis")


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create ``group`` on ``stream`` at ID 0 (MKSTREAM); False if it already existed."""
    try:
        await redis.xgroup_create(name=stream, groupname=group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


class GroupHealingRedis(Redis):
    """A client whose XREADGROUP recreates a vanished consumer group at ``0``."""

    on_group_recreated: Callable[[str, str], None] | None = None

    async def xreadgroup(
        self,
        groupname: str,
        consumername: str,
        streams: dict[Any, Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        try:
            return await super().xreadgroup(groupname, consumername, streams, *args, **kwargs)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        for stream in streams:
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            if await ensure_group(self, name, groupname):
                log.warning(
                    "consumer group %s on %s was gone (NOGROUP); recreated at 0", groupname, name
                )
                if self.on_group_recreated is not None:
                    self.on_group_recreated(name, groupname)
        return []


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
