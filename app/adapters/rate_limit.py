"""The shared rate limiter: every LLM call of every worker process stays under the limits.

``RateLimitedLLM`` wraps the provider (Groq or OpenAI-compatible) as an ``LLM`` itself, so
the service's retries, breaker, sanitizer and metrics stay as they are. For each call:

1. it estimates the tokens from the prompt plus the output room
   (``app.domain.limits.estimate_request_tokens``) and asks the ``SharedLimiter`` for one
   request and that many tokens of the model's buckets. When they are not there, the
   call **waits** (the event keeps its slot and its stream entry, which the recovery
   heartbeat keeps from being claimed); with every slot waiting the subscriber reads no
   more entries, so the backlog waits in the stream, not in memory;
2. after the answer it gives back what the estimate over-counted (``usage``) and feeds
   the ``x-ratelimit-*`` headers to the limiter, which tightens the shared state for
   every process at once;
3. a 429 stops every process until its ``retry-after`` (then the error goes on to the
   service, whose retry will wait in step 1 instead of hitting the provider again); a 413
   (a call larger than the whole tokens-per-minute limit, which the limiter lets go when
   the bucket is full: the provider's count decides) gives its reservation back, since
   the provider refused it without charging it.

Within one process the calls that wait for a model's capacity form a line: only its head
asks the shared limiter, and the line is ordered by the request's ``priority`` (the
event's severity: a critical event's call goes before the low ones already waiting),
then by arrival. So an urgent event that reaches its slot behind a rate limit does not
also queue behind every call parked there.

A wait longer than ``pause_threshold`` (a daily limit, a long retry-after) is a *pause*:
logged once, ``paused_for()`` says how long (readiness reads it through ``limiter_pause``),
``acp_groq_limiter_paused_seconds`` shows it. Waiting is cancellation-safe: nothing is
reserved until a call may go, and when the worker stops the waiting event is postponed
(its entry stays pending for the next delivery) instead of failing.

``RedisLimiter`` keeps one hash per model (``acp:groq:limiter:{model}``) and changes it
only in one Lua script, with Redis's clock, so N processes share one budget exactly.
``MemoryLimiter`` is the same arithmetic for one process (tests, a single worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from redis.exceptions import ResponseError

from app.adapters.redis_errors import REDIS_UNREACHABLE, says_not_now
from app.domain.errors import PermanentLLMError, Postponed, TransientLLMError
from app.domain.limits import (
    KINDS,
    LimitTable,
    RateLimitLesson,
    allowances,
    effective_limits,
    estimate_request_tokens,
    gcra_acquire,
    gcra_settle,
    lesson_from_headers,
    lesson_from_retry_after,
    limit_bucket,
)
from app.domain.ports import LLM, Completion, CompletionRequest
from app.domain.text import as_text
from app.runtime.state import wait_or_timeout

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient
    from app.runtime.metrics import Metrics

__all__ = [
    "Grant",
    "MemoryLimiter",
    "RateLimitedLLM",
    "RedisLimiter",
    "SharedLimiter",
    "limiter_key",
    "limiter_pause",
]

log = structlog.get_logger("acp.groq_worker.limiter")

LIMITER_KEY_PREFIX = "acp:groq:limiter:"


def limiter_key(model: str) -> str:
    """The Redis hash holding one model's buckets (``tat:<kind>``, ``blocked_until``, ...)."""
    return f"{LIMITER_KEY_PREFIX}{model}"


@dataclass(frozen=True, slots=True)
class Grant:
    """The limiter's answer: may the call go (``acquired``), else how long to wait.

    ``allowance`` is what each limited bucket can give now (requests or tokens);
    ``blocked_for`` how long every call is held by a 429 or an exhausted daily count.
    """

    acquired: bool
    wait: float = 0.0
    blocked_for: float = 0.0
    allowance: Mapping[str, float] = field(default_factory=dict)


class SharedLimiter(Protocol):
    """Budgets of requests and tokens per model, shared by every process of a deployment."""

    async def acquire(self, model: str, tokens: int) -> Grant:
        """Take one request and ``tokens`` tokens if they are all there; else say the wait."""
        ...

    async def settle(
        self, model: str, *, token_delta: int = 0, lesson: RateLimitLesson | None = None
    ) -> Grant:
        """Correct a call's token estimate by ``token_delta`` and apply what it taught."""
        ...


# -- Redis ----------------------------------------------------------------------------

# One script, two operations, Redis's own clock (ARGV[2] empty) so every process agrees.
# Numbers go back as strings: Redis would truncate Lua numbers to integers.
_LIMITER_LUA = """
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local periods = {60, 60, 86400, 86400}
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local state = redis.call('HMGET', key, 'tat:rpm', 'tat:tpm', 'tat:rpd', 'tat:tpd',
                         'blocked_until', 'learned_tpm')
local tats = {}
for i = 1, 4 do tats[i] = tonumber(state[i]) or 0 end
local blocked_until = tonumber(state[5]) or 0
local learned = tonumber(state[6]) or 0

local function fmt(x) return string.format('%.6f', x) end

local function effective()
  local result = {limits[1], limits[2], limits[3], limits[4]}
  if learned > 0 and (result[2] <= 0 or learned < result[2]) then result[2] = learned end
  return result
end

local function save()
  local horizon = blocked_until
  for i = 1, 4 do if tats[i] > horizon then horizon = tats[i] end end
  redis.call('HSET', key, 'tat:rpm', fmt(tats[1]), 'tat:tpm', fmt(tats[2]),
             'tat:rpd', fmt(tats[3]), 'tat:tpd', fmt(tats[4]),
             'blocked_until', fmt(blocked_until), 'learned_tpm', tostring(learned))
  -- once every bucket is full and no block holds, the state is worth nothing: let it go
  -- (an hour later, so a learned limit outlives short idle spells)
  redis.call('EXPIRE', key, math.max(0, math.ceil(horizon - now)) + 3600)
end

local function answer(acquired, wait, eff)
  local out = {acquired, fmt(wait), fmt(math.max(0, blocked_until - now))}
  for i = 1, 4 do
    if eff[i] > 0 then
      local used_for = math.max(tats[i], now) - now
      out[#out + 1] = fmt(math.max(0, (periods[i] - used_for) * eff[i] / periods[i]))
    else
      out[#out + 1] = '-1'
    end
  end
  return out
end

if op == 'acquire' then
  local tokens = tonumber(ARGV[7])
  local eff = effective()
  local wait = math.max(0, blocked_until - now)
  local after = {}
  for i = 1, 4 do
    after[i] = tats[i]
    if eff[i] > 0 then
      local cost = 1
      if i == 2 or i == 4 then cost = tokens end
      if cost > eff[i] then cost = eff[i] end
      after[i] = math.max(tats[i], now) + cost * periods[i] / eff[i]
      wait = math.max(wait, after[i] - periods[i] - now)
    end
  end
  if wait <= 1e-9 then
    tats = after
    save()
    return answer(1, 0, eff)
  end
  return answer(0, wait, eff)
end

-- settle: learn the limit, correct the estimate, apply the headers' lesson
local delta = tonumber(ARGV[7])
local block_for = tonumber(ARGV[8])
local full_in = tonumber(ARGV[9])
local new_limit = tonumber(ARGV[10])
if new_limit > 0 then learned = new_limit end
if block_for > 0 and now + block_for > blocked_until then blocked_until = now + block_for end
local eff = effective()
for _, i in ipairs({2, 4}) do
  if eff[i] > 0 and delta ~= 0 then
    local shift = delta * periods[i] / eff[i]
    if shift > 0 then
      tats[i] = math.max(tats[i], now) + shift
    else
      tats[i] = math.max(tats[i] + shift, now)
    end
  end
end
if full_in >= 0 and now + full_in > tats[2] then tats[2] = now + full_in end
save()
return answer(1, 0, eff)
"""


def _grant(raw: list[Any]) -> Grant:
    def number(value: Any) -> float:
        return float(as_text(value))

    allowance = {
        kind: number(value)
        for kind, value in zip(KINDS, raw[3:7], strict=True)
        if number(value) >= 0
    }
    return Grant(
        acquired=int(raw[0]) == 1,
        wait=number(raw[1]),
        blocked_for=number(raw[2]),
        allowance=allowance,
    )


class RedisLimiter:
    """``SharedLimiter`` on Redis: one hash per model, changed only by one Lua script.

    ``now`` replaces Redis's clock (tests that compare the script with the domain's
    arithmetic); in production it is None and every process reads the same clock.
    """

    def __init__(
        self, redis: RedisClient, limits: LimitTable, *, now: Callable[[], float] | None = None
    ) -> None:
        self._limits = limits
        self._script = redis.register_script(_LIMITER_LUA)
        self._now = now

    def _head(self, op: str, model: str) -> list[Any]:
        limits = self._limits.for_model(model)
        now = "" if self._now is None else repr(self._now())
        return [op, now, *(limits.limit(kind) for kind in KINDS)]

    async def acquire(self, model: str, tokens: int) -> Grant:
        args = [*self._head("acquire", model), int(tokens)]
        return _grant(await self._script(keys=[limiter_key(model)], args=args))

    async def settle(
        self, model: str, *, token_delta: int = 0, lesson: RateLimitLesson | None = None
    ) -> Grant:
        lesson = lesson or RateLimitLesson()
        full_in = lesson.tokens_full_in
        args = [
            *self._head("settle", model),
            int(token_delta),
            repr(float(lesson.block_for)),
            repr(float(full_in)) if full_in is not None else "-1",
            int(lesson.tokens_limit or 0),
        ]
        return _grant(await self._script(keys=[limiter_key(model)], args=args))


# -- one process ----------------------------------------------------------------------


@dataclass
class _ModelState:
    tats: dict[str, float] = field(default_factory=dict)
    blocked_until: float = 0.0
    learned_tpm: int = 0


class MemoryLimiter:
    """``SharedLimiter`` for one process: the domain's GCRA on a dict, with any clock."""

    def __init__(self, limits: LimitTable, *, clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._clock = clock
        self._models: dict[str, _ModelState] = {}

    def _state(self, model: str) -> _ModelState:
        return self._models.setdefault(model, _ModelState())

    async def acquire(self, model: str, tokens: int) -> Grant:
        state, now = self._state(model), self._clock()
        limits = effective_limits(self._limits.for_model(model), state.learned_tpm)
        verdict = gcra_acquire(
            state.tats, now=now, tokens=tokens, limits=limits, blocked_until=state.blocked_until
        )
        state.tats = verdict.tats
        return Grant(verdict.acquired, verdict.wait, verdict.blocked_for, verdict.allowance)

    async def settle(
        self, model: str, *, token_delta: int = 0, lesson: RateLimitLesson | None = None
    ) -> Grant:
        state, now = self._state(model), self._clock()
        if lesson is not None:
            if lesson.tokens_limit:
                state.learned_tpm = lesson.tokens_limit
            state.blocked_until = max(state.blocked_until, now + lesson.block_for)
        limits = effective_limits(self._limits.for_model(model), state.learned_tpm)
        state.tats = gcra_settle(
            state.tats, now=now, token_delta=token_delta, limits=limits, lesson=lesson
        )
        left = allowances(state.tats, now, limits)
        return Grant(True, 0.0, max(0.0, state.blocked_until - now), left)


# -- the decorator --------------------------------------------------------------------


def _used_tokens(completion: Completion) -> int | None:
    if completion.prompt_tokens is None and completion.completion_tokens is None:
        return None
    return (completion.prompt_tokens or 0) + (completion.completion_tokens or 0)


class RateLimitedLLM:
    """``LLM`` that takes its capacity from a ``SharedLimiter`` before each call.

    ``stopping`` is the service's stop signal: a call still waiting when it is set is
    postponed (``Postponed``), so shutdown does not wait out a rate limit.
    """

    def __init__(
        self,
        inner: LLM,
        limiter: SharedLimiter,
        *,
        metrics: Metrics,
        pause_threshold: float = 60.0,
        stopping: asyncio.Event | None = None,
        max_poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self._metrics = metrics
        self.pause_threshold = pause_threshold
        self._stopping = stopping
        self._max_poll = max_poll_seconds
        self._clock = clock
        self._sleep = sleep
        self._paused_until: dict[str, float] = {}
        self._lines: dict[str, _Line] = {}
        metrics.limiter_paused.set_function(self.paused_for)

    # -- the LLM port -----------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> Completion:
        model = limit_bucket(request.model, request.service_tier)  # a tier's own limits
        estimate = estimate_request_tokens(
            request.system, request.user, request.max_completion_tokens
        )
        line = self._lines.setdefault(model, _Line())
        async with line.turn(request.priority):
            await self._acquire(model, estimate)
        try:
            completion = await self.inner.complete(request)
        except TransientLLMError as exc:
            if exc.status == 498:  # flex was full: refused at once, charged nothing
                await self._settle(model, token_delta=-estimate, lesson=RateLimitLesson())
            elif exc.kind == "rate_limit":
                self._metrics.rate_limit_responses.labels(model=model).inc()
                # refused, so not charged: give the tokens back, and hold everyone
                await self._settle(
                    model,
                    token_delta=-estimate,
                    lesson=lesson_from_retry_after(exc.retry_after, exc.headers),
                )
            raise
        except PermanentLLMError as exc:
            if exc.status == 413:
                # Too large for the tokens-per-minute limit: refused at admission, charged
                # nothing. Its reservation (a whole bucket) would hold every call for a minute.
                await self._settle(model, token_delta=-estimate, lesson=RateLimitLesson())
            raise
        used = _used_tokens(completion)
        await self._settle(
            model,
            token_delta=used - estimate if used is not None else 0,
            lesson=lesson_from_headers(completion.headers),
        )
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- what readiness and metrics read ------------------------------------------------

    def paused_for(self) -> float:
        """Seconds this process still expects to hold calls for a long limit (0: not paused)."""
        now = self._clock()
        left = [until - now for until in self._paused_until.values() if until > now]
        return max(left, default=0.0)

    # -- waiting ------------------------------------------------------------------------

    async def _acquire(self, model: str, tokens: int) -> None:
        began = self._clock()
        waited = False
        failures = 0
        while True:
            try:
                grant = await self.limiter.acquire(model, tokens)
            except (*REDIS_UNREACHABLE, ResponseError) as exc:
                if not says_not_now(exc):
                    raise
                # No budget can be checked: wait for Redis like every other Redis step.
                failures += 1
                delay = min(0.05 * 2**failures, 5.0)
                self._metrics.redis_errors.labels(operation="limiter").inc()
                log.warning("limiter_unavailable", model=model, error=str(exc), retry_in=delay)
                await self._pause(delay)
                continue
            self._show(model, grant)
            if grant.acquired:
                break
            if not waited:
                waited = True
                self._metrics.rate_limit_avoided.labels(model=model).inc()
            self._note_pause(model, grant.wait)
            await self._pause(min(grant.wait, self._max_poll) + _jitter(grant.wait))
        self._resume(model)
        self._metrics.limiter_wait.labels(model=model).observe(self._clock() - began)

    async def _pause(self, seconds: float) -> None:
        stopping = self._stopping
        if stopping is None:
            await self._sleep(seconds)
            return
        if stopping.is_set():
            raise Postponed
        if await wait_or_timeout(stopping, seconds):
            raise Postponed

    async def _settle(self, model: str, *, token_delta: int, lesson: RateLimitLesson) -> None:
        if token_delta == 0 and lesson.empty:
            return
        try:
            grant = await self.limiter.settle(model, token_delta=token_delta, lesson=lesson)
        except (*REDIS_UNREACHABLE, ResponseError) as exc:
            if not says_not_now(exc):
                raise
            # The answer in hand matters more than the bookkeeping: keep it, say so.
            self._metrics.redis_errors.labels(operation="limiter").inc()
            log.warning("limiter_settle_failed", model=model, error=str(exc))
            return
        self._show(model, grant)
        self._note_pause(model, grant.blocked_for)

    def _show(self, model: str, grant: Grant) -> None:
        for kind, units in grant.allowance.items():
            if math.isfinite(units):
                self._metrics.limiter_allowance.labels(model=model, kind=kind).set(units)

    def _note_pause(self, model: str, seconds: float) -> None:
        if seconds <= self.pause_threshold:
            return
        until = self._clock() + seconds
        if self._paused_until.get(model, 0.0) <= self._clock():
            log.warning(
                "llm_rate_limit_pause",
                model=model,
                seconds=round(seconds, 1),
                note="calls to this model wait; new events stay in the stream",
            )
        self._paused_until[model] = max(until, self._paused_until.get(model, 0.0))

    def _resume(self, model: str) -> None:
        if self._paused_until.pop(model, None) is not None:
            log.info("llm_rate_limit_resumed", model=model)


class _Line:
    """The calls of one process waiting for one model's capacity, most urgent first."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = 0
        self._busy = False

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        """Wait to be the head of the line (``priority`` 0 first), hold it, pass it on."""
        if self._busy or self._waiting:
            self._arrivals += 1
            waiter = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, self._arrivals, waiter))
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed the turn, then cancelled
                    self._next()
                else:
                    self._waiting = [w for w in self._waiting if w[2] is not waiter]
                    heapq.heapify(self._waiting)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy = False


def _jitter(wait: float) -> float:
    """Up to 10% (at most 250 ms) more, so waiting processes do not all wake together."""
    return random.uniform(0.0, min(0.25, wait * 0.1))


def limiter_pause(llm: object) -> float:
    """Seconds the worker's model calls are paused by a rate limit (0 if not limited).

    For readiness: ``limiter_pause(worker.llm) > 0`` means events wait for the provider.
    """
    return llm.paused_for() if isinstance(llm, RateLimitedLLM) else 0.0
