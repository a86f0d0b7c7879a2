"""Each FastStream workaround still works, and the upstream behaviour it works around is there.

A failure of an ``upstream_`` test means FastStream changed: the workaround in
``app/adapters/faststream_workarounds.py`` may be unnecessary now (or broken): read the
module's docstring, then drop or adapt it.
"""

from __future__ import annotations

import inspect
import threading
from typing import Annotated, Any

from faststream import Context
from faststream.redis import RedisBroker, StreamSub, TestRedisBroker
from faststream.redis.configs.state import RedisClusterConnectionState
from faststream.redis.publisher.producer import RedisClusterFastProducer
from faststream.redis.subscriber.usecases.stream_subscriber import StreamSubscriber
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.adapters.faststream_workarounds import (
    EventLoopContext,
    GroupHealingBroker,
    GroupHealingClusterBroker,
    GroupHealingRedis,
    GroupHealingRedisCluster,
    UncopiedStreamSub,
)


def _thread_of_resolution() -> int:
    return threading.get_ident()


async def _resolution_threads() -> dict[str, int]:
    """Which thread resolves a handler's ``Context`` and ``EventLoopContext`` parameters."""
    broker = RedisBroker()
    seen: dict[str, int] = {}

    @broker.subscriber(stream="probe")
    async def handle(
        body: dict[str, Any],
        upstream: Annotated[int, Context("upstream", initial=_thread_of_resolution)],
        ours: Annotated[int, EventLoopContext("ours", initial=_thread_of_resolution)],
    ) -> None:
        seen.update(upstream=upstream, ours=ours, loop=threading.get_ident())

    async with TestRedisBroker(broker) as test_broker:
        await test_broker.publish({"n": 1}, stream="probe")
    return seen


async def test_upstream_context_parameters_still_resolve_in_a_worker_thread():
    """FastStream's Context() is resolved off the event loop (a thread hop per message)."""
    seen = await _resolution_threads()
    assert seen["upstream"] != seen["loop"]


async def test_event_loop_context_resolves_on_the_event_loop():
    """EventLoopContext resolves the same value in the handler's own thread: no hop."""
    seen = await _resolution_threads()
    assert seen["ours"] == seen["loop"]


def test_upstream_stream_sub_add_prefix_still_deep_copies():
    stream = StreamSub("acp:groq_queue", group="g", consumer="c")
    assert stream.add_prefix("") is not stream


def test_uncopied_stream_sub_is_returned_as_is_without_a_prefix_and_copied_with_one():
    stream = UncopiedStreamSub("acp:groq_queue", group="g", consumer="c")
    assert stream.add_prefix("") is stream
    prefixed = stream.add_prefix("tenant:")
    assert prefixed is not stream
    assert (prefixed.name, stream.name) == ("tenant:acp:groq_queue", "acp:groq_queue")


def test_upstream_stream_subscriber_still_stops_on_nogroup():
    """FastStream stops the subscriber and exits the app on NOGROUP (ag2ai/faststream#2855)."""
    source = inspect.getsource(StreamSubscriber._consume)
    assert "NOGROUP" in source
    assert "_stop_on_terminal_error" in source


def test_group_healing_broker_still_builds_its_client_through_the_private_hook():
    """The hook the broker overrides exists upstream, and the broker's state makes our client."""
    assert "_make_connection_state" in vars(RedisBroker)
    broker = GroupHealingBroker("redis://127.0.0.1:1/0")
    state = broker.config.broker_config.connection
    assert type(state).__name__ == "_GroupHealingConnectionState"
    assert issubclass(GroupHealingRedis, Redis)


def test_upstream_cluster_state_still_builds_its_client_from_its_options():
    """FastStream's RedisClusterConnectionState builds RedisCluster(**_options): ours copies it."""
    source = inspect.getsource(RedisClusterConnectionState.connect)
    assert "RedisCluster(**connection_kwargs)" in source
    assert "self._options" in source


def test_upstream_cluster_producer_still_ignores_a_pipeline():
    """A cluster broker's stream publish goes straight to the client (no transaction to join):
    the cluster store publishes InsightCreated on its own, after the indexes."""
    source = inspect.getsource(RedisClusterFastProducer.publish)
    assert "pipeline" not in source
    assert "self._connection.client.xadd" in source


async def test_group_healing_cluster_broker_builds_a_healing_cluster_client():
    """The cluster broker's state is ours, and connecting yields a GroupHealingRedisCluster."""
    broker = GroupHealingClusterBroker("redis://127.0.0.1:1/0")
    state = broker.config.broker_config.connection
    assert isinstance(state, RedisClusterConnectionState)
    assert type(state).__name__ == "_GroupHealingClusterConnectionState"
    assert issubclass(GroupHealingRedisCluster, RedisCluster)
    client = GroupHealingRedisCluster(host="127.0.0.1", port=1)  # connects lazily
    assert isinstance(client, RedisCluster)
    await client.aclose()
