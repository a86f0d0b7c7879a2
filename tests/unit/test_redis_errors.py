"""Which Redis errors the worker waits out ("not now") and which it treats as failures."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.adapters.redis_errors import refusal_reason, says_not_now


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
