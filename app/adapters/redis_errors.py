"""Which Redis errors mean "not now": wait and try the same command again.

Redis refuses work it will accept later: it is out of reach (connection lost, timeout),
loading its data set (``LOADING``), a replica after a failover (``READONLY``), a replica
whose primary is down (``MASTERDOWN``), full under ``noeviction`` (``OOM``), running a
long script (``BUSY``), unable to persist (``MISCONF``), or a cluster moving slots
(``TRYAGAIN``, ``CLUSTERDOWN``). In cluster mode redis-py adds two of its own: no node
reachable (a ``RedisClusterException`` caused by a connection error) and a slot no
primary serves (``SlotNotCoveredError``: a primary down until it is back or replaced).
None of these says anything about the event at hand: the
worker waits them out in place, keeping the event's slot and whatever result it holds,
instead of failing the event (which would count a delivery, free the slot and let the
subscriber read ever more entries it cannot write).
"""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_UNREACHABLE", "refusal_reason", "says_not_now", "unreachable"]

REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, SlotNotCoveredError)
# redis-py strips the reply's code from the message of these: their codes, by class.
_REFUSALS = {
    BusyLoadingError: "LOADING",
    ReadOnlyError: "READONLY",
    MasterDownError: "MASTERDOWN",
    OutOfMemoryError: "OOM",
    TryAgainError: "TRYAGAIN",
    ClusterDownError: "CLUSTERDOWN",
}
# Refusals redis-py has no class for: the reply's first word.
_REFUSAL_CODES = ("BUSY ", "MISCONF ")


def says_not_now(exc: BaseException) -> bool:
    """True when ``exc`` is Redis out of reach or refusing for now (see the module doc)."""
    if unreachable(exc) or isinstance(exc, tuple(_REFUSALS)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_REFUSAL_CODES)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says Redis (or every node of a cluster) could not be reached."""
    if isinstance(exc, REDIS_UNREACHABLE):
        return True
    return isinstance(exc, RedisClusterException) and isinstance(exc.__cause__, REDIS_UNREACHABLE)


def refusal_reason(exc: BaseException) -> str:
    """A short reason for readiness and metrics: the reply's code, or the error's class."""
    for refusal, code in _REFUSALS.items():
        if isinstance(exc, refusal):
            return code
    if isinstance(exc, ResponseError) and str(exc).startswith(_REFUSAL_CODES):
        return str(exc).split(" ", 1)[0]
    return type(exc).__name__
