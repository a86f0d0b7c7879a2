"""Which Redis errors the worker waits out ("not now") and which it treats as failures."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.adapters.redis_errors import refusal_reason, says_not_now, unreachable


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM"),
        (ReadOnlyError("You can't write against a read only replica."), "READONLY"),
        (MasterDownError("Link with MASTER is down"), "MASTERDOWN"),
        (BusyLoadingError("Redis is loading the dataset in memory"), "LOADING"),
        (TryAgainError("Multiple keys request during rehashing of slot"), "TRYAGAIN"),
        (ClusterDownError("The cluster is down"), "CLUSTERDOWN"),
        (ResponseError("BUSY Redis is busy running a script."), "BUSY"),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), "MISCONF"),
        (RedisConnectionError("Connection reset by peer"), "ConnectionError"),
        (RedisTimeoutError("Timeout reading from socket"), "TimeoutError"),
    ],
)
def test_redis_saying_not_now_is_waited_out_with_a_short_reason(error, reason):
    assert says_not_now(error)
    assert refusal_reason(error) == reason


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("BUSYGROUP Consumer Group name already exists"),
        ResponseError("NOGROUP No such key 'acp:groq_queue' or consumer group"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        NoScriptError("No matching script. Please use EVAL."),
        ValueError("not a Redis error"),
    ],
)
def test_other_errors_are_not_waited_out(error):
    assert not says_not_now(error)


def _cluster_unreachable() -> RedisClusterException:
    try:
        raise RedisClusterException("Redis Cluster cannot be connected") from RedisConnectionError(
            "Connection refused"
        )
    except RedisClusterException as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [_cluster_unreachable(), SlotNotCoveredError('Slot "42" is not covered by the cluster.')],
    ids=["no-node-answers", "slot-not-covered"],
)
def test_a_cluster_out_of_reach_is_waited_out(error):
    """No node of the cluster answers, or a primary is down: not now, and unreachable."""
    assert says_not_now(error)
    assert unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        RedisClusterException("EVAL - all keys must map to the same key slot"),
        ClusterCrossSlotError(),
    ],
    ids=["client-cross-slot", "server-crossslot"],
)
def test_a_cross_slot_mistake_is_a_failure_not_an_outage(error):
    """Keys of several slots in one command is a bug: never waited out."""
    assert not says_not_now(error)
    assert not unreachable(error)
