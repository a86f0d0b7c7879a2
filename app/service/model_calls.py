"""One event's model call: the breaker gate, retries with backoff, and the fallback model.

``ModelCaller.answer`` turns a prepared prompt into a completion or one ``LLMError``
whose ``attempts`` says how many requests the event spent. The policy:

* one retry layer (tenacity), ``GROQ_MAX_ATTEMPTS`` attempts per event in all, with
  exponential backoff and full jitter; a server's ``retry-after`` wins, capped;
* the deep model leaves its last attempt to the fast model when it fails as a model
  (transient errors, not found, decommissioned): the answer records ``fallback``;
* while the circuit breaker is open, events wait before their first attempt; when it
  half-opens one event's call is the probe, with a single attempt: if the model is still
  down, that event goes back to waiting instead of spending its attempts on the outage;
* each request carries the event's urgency: its place among calls waiting for a model's
  capacity (EVENT_ORDER=priority) and its Groq service tier (``GROQ_SERVICE_TIERS``). A
  request the flex tier refuses (498 ``capacity_exceeded``) is no failure: an urgent
  event's goes again at once on ``on_demand``; another event waits (backoff shared by the
  process, reset by flex's next answer) and tries again, in place or, a scheduled job,
  back in the scheduler (``WaitForCapacity``). Its attempts are not spent, the breaker
  does not count it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from app.domain.breaker import BreakerState, CircuitBreaker
from app.domain.errors import (
    LLMError,
    PermanentLLMError,
    Postponed,
    TransientLLMError,
    WaitForCapacity,
)
from app.domain.events import Severity
from app.domain.ports import LLM, Completion, CompletionRequest
from app.domain.prompt import INSIGHT_JSON_SCHEMA
from app.domain.routing import URGENT_SEVERITIES, ServiceTier, choose_tier
from app.domain.scheduling import EventOrder, rank
from app.runtime.genai_spans import traced_completion
from app.runtime.metrics import Labelled, Metrics
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing
from app.settings import Settings

__all__ = ["Answer", "ModelCaller"]

log = structlog.get_logger("acp.groq_worker.events")


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's completion for one event, and what it took."""

    completion: Completion
    model: str
    attempts: int
    fallback: bool

    def facts(self) -> dict[str, Any]:
        """What the event's log line says of the answer."""
        completion = self.completion
        return {
            "model": self.model,
            "attempts": self.attempts,
            "fallback": self.fallback,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cached_tokens": completion.cached_tokens,
        }


class _ProbeFailed(Exception):
    """This event's call was the breaker's probe and the model is still down."""


class _FlexFull(Exception):
    """Groq's flex tier refused this event's request (498): capacity, not a failure."""


# Waits for flex capacity: 1 s, doubling with each refusal in a row, at most 30 s (Groq:
# "add jittered backoff and retries to smooth spikes").
_FLEX_WAIT_BASE_SECONDS = 1.0
_FLEX_WAIT_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Manner:
    """How one event's requests go: their place in line and their service tier."""

    priority: int = 0
    tier: ServiceTier | None = None
    severity: Severity | None = None

    @property
    def urgent(self) -> bool:
        return self.severity in URGENT_SEVERITIES


class ModelCaller:
    """Asks the model for one event's answer under the worker's retry and breaker policy."""

    def __init__(
        self,
        settings: Settings,
        *,
        llm: LLM,
        metrics: Metrics,
        state: WorkerState,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing | None = None,
    ) -> None:
        """``tracing``: a ``chat {model}`` span per attempt (None: no spans, no cost)."""
        self._settings = settings
        self._tracing = tracing
        self.llm = llm
        self.breaker = breaker
        self._metrics = metrics
        self._llm_latency = Labelled(metrics.llm_latency)
        self._tier_requests = Labelled(metrics.tier_requests)
        self._state = state
        self._sleep = sleep
        self._clock = clock
        self._flex_refusals = 0  # flex refusals in a row (this process's backoff)

    async def answer(
        self,
        model: str,
        system: str,
        user: str,
        *,
        severity: Severity | None = None,
        wait_in_place: bool = True,
    ) -> Answer:
        """The answer of ``model`` (or of the fast model after a fallback) for an event of
        ``severity`` (None: no event's urgency, e.g. the batch lane's).

        Raises ``LLMError`` (with ``attempts``) when no answer could be had, and
        ``Postponed`` when the worker began stopping before the event's call started.
        While flex has no capacity for a non-urgent event, it waits here, or with
        ``wait_in_place=False`` raises ``WaitForCapacity`` for its caller to wait.
        """
        manner = self._manner(severity)
        while True:
            probe = await self._wait_for_breaker()
            try:
                return await self._ask(model, system, user, probe=probe, manner=manner)
            except _ProbeFailed:
                continue  # the event waits for the next probe; its attempts are not spent
            except _FlexFull:
                assert severity is not None  # a tier is only chosen for an event
                if manner.urgent:
                    self._metrics.tier_fallbacks.labels(severity=severity.value).inc()
                    log.warning("service_tier_fallback", tier=manner.tier, to=ServiceTier.ON_DEMAND)
                    manner = replace(manner, tier=ServiceTier.ON_DEMAND)
                    continue
                self._metrics.capacity_waits.labels(severity=severity.value).inc()
                delay = self._flex_wait()
                if not wait_in_place:
                    raise WaitForCapacity(delay) from None
                log.info("flex_capacity_wait", retry_in=round(delay, 2))
                if await self._state.pause(delay):
                    raise Postponed from None

    def _manner(self, severity: Severity | None) -> _Manner:
        if severity is None:
            return _Manner()
        settings = self._settings
        ordered = settings.event_order is EventOrder.PRIORITY
        return _Manner(
            priority=rank(severity) if ordered else 0,
            tier=choose_tier(severity, settings.groq_service_tiers),
            severity=severity,
        )

    def _flex_wait(self) -> float:
        """How long a refused event waits: grows with the refusals in a row, jittered."""
        self._flex_refusals += 1
        ceiling = min(
            _FLEX_WAIT_MAX_SECONDS, _FLEX_WAIT_BASE_SECONDS * 2 ** (self._flex_refusals - 1)
        )
        return random.uniform(ceiling / 2, ceiling)

    def breaker_open(self) -> bool:
        """True while the breaker keeps new events away from the model (readiness)."""
        if self.breaker is None:
            return False
        state = self.breaker.state(self._clock())
        self._metrics.breaker_state.set(state)
        return state is not BreakerState.CLOSED

    async def _ask(
        self, model: str, system: str, user: str, *, probe: bool, manner: _Manner
    ) -> Answer:
        fast = self._settings.groq_model_fast
        total = self._settings.groq_max_attempts
        # GROQ_MAX_ATTEMPTS counts every attempt of the event: the deep model leaves the
        # last one to the fallback on the fast model.
        first = 1 if probe else (total - 1 if model != fast and total > 1 else total)
        try:
            completion, attempts = await self._complete(
                model, system, user, attempts=first, manner=manner
            )
            return Answer(completion, completion.model or model, attempts, fallback=False)
        except LLMError as exc:
            if probe and exc.transient:
                raise _ProbeFailed from None
            model_failed = exc.transient or (isinstance(exc, PermanentLLMError) and exc.model_error)
            spent = exc.attempts
            if model == fast or not model_failed or spent >= total:
                raise
            self._metrics.fallbacks.inc()
            log.warning("model_fallback", model=model, fallback_model=fast, error=str(exc))
        try:
            completion, _ = await self._complete(
                fast, system, user, attempts=1, manner=manner, first=spent + 1, fallback=True
            )
        except LLMError as exc:
            exc.attempts = spent + 1
            raise
        return Answer(completion, completion.model or fast, spent + 1, fallback=True)

    async def _complete(
        self,
        model: str,
        system: str,
        user: str,
        *,
        attempts: int,
        manner: _Manner,
        first: int = 1,
        fallback: bool = False,
    ) -> tuple[Completion, int]:
        """Up to ``attempts`` requests to ``model``; ``first``: the event's number of the
        first of them (after a ``fallback``, the attempts the deep model spent plus one)."""
        request = CompletionRequest(
            model=model,
            system=system,
            user=user,
            max_completion_tokens=self._settings.groq_max_completion_tokens,
            json_schema=INSIGHT_JSON_SCHEMA,
            reasoning_effort=self._settings.groq_reasoning_effort,
            priority=manner.priority,
            service_tier=manner.tier,
        )
        # The first attempt runs outside tenacity: nearly every event needs no other, and
        # tenacity's machinery (built per call) costs more than the attempt's bookkeeping.
        try:
            return await self._attempt(request, number=first, fallback=fallback), 1
        except LLMError as exc:
            exc.attempts = 1
            if not isinstance(exc, TransientLLMError) or attempts <= 1:
                raise
            first_failure = exc
        await self._sleep(self._delay(1, first_failure))  # outside the except: no chaining
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts - 1),
            wait=self._backoff_after_first,
            retry=retry_if_exception(lambda exc: isinstance(exc, TransientLLMError)),
            sleep=self._sleep,
            reraise=True,
        )
        attempt_number = 1
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number + 1
                    number = first + attempt_number - 1
                    completion = await self._attempt(request, number=number, fallback=fallback)
                    return completion, attempt_number
        except LLMError as exc:
            exc.attempts = attempt_number
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(
        self, request: CompletionRequest, *, number: int = 1, fallback: bool = False
    ) -> Completion:
        """One request (the event's attempt ``number``), counted and timed."""
        began = self._clock()
        tier = request.service_tier or "default"
        try:
            if self._tracing is None:
                completion = await self.llm.complete(request)
            else:
                completion = await traced_completion(
                    self._tracing, self.llm.complete, request, attempt=number, fallback=fallback
                )
        except LLMError as exc:
            self._metrics.api_errors.labels(error_type=exc.kind).inc()
            if request.service_tier == ServiceTier.FLEX and exc.status == 498:
                self._tier_requests(tier, "capacity_exceeded").inc()
                if self.breaker is not None:  # a full flex tier says nothing of the model
                    self.breaker.release_probe()
                raise _FlexFull from None
            self._tier_requests(tier, "failed").inc()
            if exc.transient or (isinstance(exc, PermanentLLMError) and exc.configuration):
                self._breaker_failure(exc)
            elif self.breaker is not None:
                self.breaker.release_probe()
            if isinstance(exc, PermanentLLMError) and exc.configuration:
                self._metrics.config_alarms.labels(kind=exc.kind).inc()
                log.error("llm_configuration_error", model=request.model, error=str(exc))
            raise
        except BaseException:
            if self.breaker is not None:
                self.breaker.release_probe()
            raise
        finally:
            self._llm_latency(request.model).observe(self._clock() - began)
        self._tier_requests(tier, "answered").inc()
        if request.service_tier == ServiceTier.FLEX:
            self._flex_refusals = 0
        if self.breaker is not None:
            if self.breaker.state(self._clock()) is not BreakerState.CLOSED:
                log.info("breaker_closed", model=request.model)
            self.breaker.record_success()
            self._metrics.breaker_state.set(BreakerState.CLOSED)
        return completion

    def _breaker_failure(self, exc: LLMError) -> None:
        if self.breaker is None:
            return
        if self.breaker.record_failure(self._clock()):
            self._metrics.breaker_state.set(BreakerState.OPEN)
            log.error(
                "breaker_opened",
                error=str(exc),
                cooldown_seconds=self.breaker.cooldown,
                note="new events wait in the stream until a probe succeeds",
            )

    async def _wait_for_breaker(self) -> bool:
        """Hold a new event while the breaker is open; one probe goes when it half-opens.

        Returns True when this event's call is the probe.
        """
        breaker = self.breaker
        stopping = self._state.stopping
        while True:
            if stopping.is_set():
                raise Postponed
            if breaker is None:
                return False
            now = self._clock()
            state = breaker.state(now)
            if breaker.try_acquire(now):
                self._metrics.breaker_state.set(state)
                return state is BreakerState.HALF_OPEN
            self._metrics.breaker_state.set(breaker.state(now))
            await self._state.pause(min(max(breaker.retry_in(now), 0.05), 1.0))

    def _backoff_after_first(self, state: RetryCallState) -> float:
        """tenacity's wait for the attempts after the first (its attempt 1 is the event's 2)."""
        exc = state.outcome.exception() if state.outcome else None
        return self._delay(state.attempt_number + 1, exc)

    def _delay(self, failed_attempt: int, exc: BaseException | None) -> float:
        """The wait after attempt ``failed_attempt`` failed with ``exc``.

        Exponential backoff with full jitter; a server's retry-after wins (capped).
        """
        settings = self._settings
        ceiling = min(
            settings.groq_backoff_max_seconds,
            settings.groq_backoff_base_seconds * 2 ** (failed_attempt - 1),
        )
        delay = random.uniform(ceiling / 2, ceiling)
        if isinstance(exc, TransientLLMError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, settings.groq_retry_after_max_seconds))
        return delay
