"""Waiting out Redis: a store step is tried until Redis answers, never given up.

A result in hand (an answer the model was paid for, a dead letter, an acknowledgement) is
never thrown away because Redis is away or refusing for now (``StoreUnavailable``: out of
reach, OOM, READONLY, LOADING...). The step keeps its event's slot while it waits, so the
subscriber stops reading when every slot waits; shutdown cancels the wait and the entry
stays pending for the next delivery. While Redis refuses, readiness says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from app.domain.errors import StoreUnavailable
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState

__all__ = ["StoreSteps"]

log = structlog.get_logger("acp.groq_worker.events")

T = TypeVar("T")


class StoreSteps:
    """Runs each store step of the event path until Redis answers."""

    def __init__(
        self,
        metrics: Metrics,
        state: WorkerState,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._errors = metrics.redis_errors
        self._refusals = metrics.redis_refusals
        self._state = state
        self._sleep = sleep

    async def until_done(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``'s result, retried with capped exponential backoff for as long as it
        raises ``StoreUnavailable``."""
        delay = 0.05
        while True:
            try:
                result = await call()
            except StoreUnavailable as exc:
                self._errors.labels(operation=operation).inc()
                self._refusals.labels(reason=exc.reason).inc()
                self._state.redis_refusal = exc.reason
                log.warning(
                    "redis_unavailable", operation=operation, error=str(exc), retry_in=delay
                )
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._state.redis_refusal is not None:
                log.info("redis_accepting_again", operation=operation)
                self._state.redis_refusal = None
            return result
