"""The worker's operations port: ``/metrics``, ``/health/live``, ``/health/ready``.

One small aiohttp server in the worker's own event loop, on ``METRICS_PORT`` (0: none),
and two background tasks next to it:

* a heartbeat, which ``/health/live`` reads: the loop is alive if it keeps ticking;
* a sampler, which sets the gauges that describe Redis rather than this process
  (``acp_groq_group_lag``, ``acp_groq_group_pending``, ``acp_groq_dlq_size``,
  ``acp_groq_stream_length``; what waits in the scheduler, ``acp_groq_waiting_events``
  and the others; ``acp_groq_backlog_events``, lag plus waiting, for autoscaling) every
  few seconds, instead of per event. It survives a Redis outage: one log line when
  sampling starts failing, one when it works again, ``acp_groq_redis_errors_total{
  operation="sample"}`` meanwhile.

``/health/ready`` runs a list of ``ReadinessCheck`` (the subscriber runs, Redis answers
and the group exists, the circuit breaker is closed, no rate limit pauses model calls),
each bounded by a timeout, so a Redis that does not answer makes the probe say 503
rather than hang. The server takes what it reads (settings, Redis, metrics, and
callables that answer for the subscriber, the breaker and the model), not the worker:
the composition root hands them down.

``/metrics`` is ``prometheus_client``'s aiohttp handler on the worker's own registry: the
text format by default, OpenMetrics when the scraper asks for it (``Accept:
application/openmetrics-text``), gzip when it accepts it.

Several processes (``faststream run --workers N``): FastStream hands each process its
index; process ``i`` listens on ``METRICS_PORT + i``, or on the next free port above it
if that one is taken (a port in use never stops the worker; the port taken is logged).
Prometheus scrapes each process on its own port; see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from app.adapters import inspect
from app.adapters.dlq import dlq_size
from app.adapters.rate_limit import limiter_pause
from app.adapters.redis_scheduler import waiting_stats
from app.domain.scheduling import WaitingStats
from app.runtime.logs import get_logger
from app.settings import RedisMode

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient
    from app.runtime.metrics import Metrics
    from app.settings import Settings

__all__ = [
    "CheckResult",
    "GroupSampler",
    "OperationsServer",
    "ReadinessCheck",
    "breaker_check",
    "default_checks",
    "rate_limit_check",
    "redis_group_check",
    "start_operations",
    "subscriber_check",
]

log = get_logger("acp.groq_worker.ops")

BIND_HOST = "0.0.0.0"  # every interface: probes and Prometheus reach the pod's address
PORT_SEARCH_SPAN = 16  # METRICS_PORT + index, then up to 15 ports above it
SAMPLE_INTERVAL_SECONDS = 5.0
SAMPLE_TIMEOUT_SECONDS = 3.0
PROBE_TIMEOUT_SECONDS = 1.5
HEARTBEAT_SECONDS = 1.0
LIVE_STALL_SECONDS = 30.0


# -- readiness ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One condition of readiness: ``probe`` returns why the worker is not ready, or None."""

    name: str
    probe: Callable[[], Awaitable[str | None]]

    async def run(self, within: float) -> CheckResult:
        try:
            async with asyncio.timeout(within):
                problem = await self.probe()
        except TimeoutError:
            problem = f"no answer within {within:g} s"
        except Exception as exc:  # a probe that fails says why; it never fails the server
            problem = f"{type(exc).__name__}: {exc}"
        return CheckResult(self.name, problem is None, problem or "ok")


def redis_group_check(redis: RedisClient, stream: str, group: str) -> ReadinessCheck:
    """Redis answers and ``XINFO GROUPS <stream>`` lists the group."""

    async def probe() -> str | None:
        if await inspect.group_info(redis, stream, group) is None:
            return f"consumer group {group} does not exist on {stream}"
        return None

    return ReadinessCheck("redis_group", probe)


def breaker_check(is_open: Callable[[], bool]) -> ReadinessCheck:
    """The circuit breaker around the model is closed (``is_open()`` is False)."""

    async def probe() -> str | None:
        return "circuit breaker is open: not taking events" if is_open() else None

    return ReadinessCheck("breaker", probe)


def subscriber_check(is_running: Callable[[], bool]) -> ReadinessCheck:
    """The broker (and so the stream subscriber) is running: not starting, not draining."""

    async def probe() -> str | None:
        return None if is_running() else "subscriber is not running (starting or stopping)"

    return ReadinessCheck("subscriber", probe)


def default_checks(
    settings: Settings,
    redis: RedisClient,
    *,
    subscriber_running: Callable[[], bool],
    breaker_open: Callable[[], bool],
    llm: object,
    redis_refusal: Callable[[], str | None] = lambda: None,
) -> list[ReadinessCheck]:
    """The readiness of a worker: subscriber running, Redis and group, breaker closed,
    model calls not paused by the provider's rate limit (``llm`` behind the limiter),
    Redis accepting the writes of events (``redis_refusal`` says why not)."""
    return [
        subscriber_check(subscriber_running),
        redis_group_check(redis, settings.insight_stream, settings.insight_group),
        breaker_check(breaker_open),
        rate_limit_check(lambda: limiter_pause(llm)),
        redis_writes_check(redis_refusal),
    ]


def redis_writes_check(refusal: Callable[[], str | None]) -> ReadinessCheck:
    """Not ready while Redis refuses the writes of events (OOM, READONLY, ...)."""

    async def probe() -> str | None:
        reason = refusal()
        return None if reason is None else f"Redis refuses writes ({reason}); events wait"

    return ReadinessCheck("redis_writes", probe)


def rate_limit_check(paused_for: Callable[[], float]) -> ReadinessCheck:
    """Not ready while the provider's rate limit pauses model calls for long."""

    async def probe() -> str | None:
        seconds = paused_for()
        if seconds > 0:
            return f"model calls paused {seconds:.0f}s by the provider's rate limit"
        return None

    return ReadinessCheck("rate_limit", probe)


# -- the sampler -------------------------------------------------------------------


class GroupSampler:
    """Sets the Redis-side gauges every ``interval`` seconds; never dies of an outage."""

    def __init__(
        self,
        redis: RedisClient,
        metrics: Metrics,
        stream: str,
        group: str,
        *,
        interval: float = SAMPLE_INTERVAL_SECONDS,
        timeout: float = SAMPLE_TIMEOUT_SECONDS,
        refresh: Sequence[Callable[[], object]] = (),
        scheduler: bool = False,
    ) -> None:
        """``scheduler``: sample what waits in the scheduler too (a single Redis)."""
        self._redis = redis
        self._refresh = list(refresh)
        self._scheduler = scheduler
        self._metrics = metrics
        self._stream = stream
        self._group = group
        self.interval = interval
        self._timeout = timeout
        self._failing = False

    async def sample(self) -> None:
        """Read the group and the DLQ once and set the gauges (raises if Redis fails)."""
        for refresh in self._refresh:  # in-process gauges that time alone changes
            refresh()
        async with asyncio.timeout(self._timeout):
            info = await inspect.group_info(self._redis, self._stream, self._group)
            size = await dlq_size(self._redis)
            length = await inspect.stream_length(self._redis, self._stream)
            waiting = await waiting_stats(self._redis) if self._scheduler else None
        # NaN says "unknown" (no group yet, or a lag Redis cannot compute): a stale number
        # or a zero would say something false.
        lag = info.lag if info is not None and info.lag is not None else math.nan
        metrics = self._metrics
        metrics.group_lag.set(lag)
        metrics.group_pending.set(info.pending if info is not None else math.nan)
        metrics.dlq_size.set(size)
        metrics.stream_length.set(length)
        metrics.backlog.set(lag + (sum(waiting.waiting.values()) if waiting else 0))
        if waiting is not None:
            self._show_waiting(waiting)

    def _show_waiting(self, stats: WaitingStats) -> None:
        metrics, now = self._metrics, time.time()
        for severity, count in stats.waiting.items():
            metrics.waiting.labels(severity=severity).set(count)
            oldest = stats.oldest[severity]
            age = max(0.0, now - oldest) if oldest is not None else 0.0
            metrics.oldest_waiting.labels(severity=severity).set(age)
        metrics.scheduled_running.set(stats.running)
        metrics.waiting_retry.set(stats.later)
        metrics.waiting_by_tenant.clear()  # the top tenants change; the others' series go
        for tenant, count in stats.top_tenants:
            metrics.waiting_by_tenant.labels(tenant_id=tenant).set(count)

    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: say it once, count it, keep sampling
                self._metrics.redis_errors.labels(operation="sample").inc()
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "metrics_sampling_failed",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_every=self.interval,
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.info("metrics_sampling_recovered")
            if task is not None and task.cancelling():
                # redis-py can swallow a cancel that lands while it connects (the family of
                # redis/redis-py#2551): honour it here, or stop() would wait forever.
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval)


# -- the server --------------------------------------------------------------------


class OperationsServer:
    """The running HTTP server and its background tasks; ``port`` None when there is none."""

    def __init__(
        self,
        metrics: Metrics,
        checks: Sequence[ReadinessCheck],
        sampler: GroupSampler,
        *,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self.metrics = metrics
        self.checks = list(checks)
        self.sampler = sampler
        self.port: int | None = None
        self._probe_timeout = probe_timeout
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._beat = time.monotonic()

    # -- what the endpoints answer --------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        age = time.monotonic() - self._beat
        heartbeat_alive = any(task.get_name() == "ops-heartbeat" for task in self._running())
        alive = heartbeat_alive and age < LIVE_STALL_SECONDS
        body: dict[str, Any] = {
            "status": "alive" if alive else "stalled",
            "heartbeat_age_seconds": round(age, 3),
        }
        if not alive:
            body["reason"] = (
                "the event loop has not ticked for a while"
                if heartbeat_alive
                else "the heartbeat task has stopped"
            )
        return web.json_response(body, status=200 if alive else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        ready, results = await self.readiness()
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def readiness(self) -> tuple[bool, list[CheckResult]]:
        results = await asyncio.gather(*(c.run(self._probe_timeout) for c in self.checks))
        return all(r.ok for r in results), list(results)

    async def sample_now(self) -> None:
        """Sample the gauges at once (the loop samples every few seconds on its own)."""
        await self.sampler.sample()

    # -- lifecycle ----------------------------------------------------------------

    def _running(self) -> list[asyncio.Task[None]]:
        return [task for task in self._tasks if not task.done()]

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def listen(self, ports: Iterable[int]) -> int | None:
        """Listen on the first free port of ``ports``; None if every one is taken."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        taken: list[int] = []
        for port in ports:
            site = web.TCPSite(runner, BIND_HOST, port)
            try:
                await site.start()
            except OSError:
                await site.stop()
                taken.append(port)
                continue
            self._runner = runner
            self.port = site.port
            if taken:
                log.warning("metrics_port_in_use", tried=taken, port=self.port)
            return self.port
        await runner.cleanup()
        log.error(
            "metrics_port_unavailable",
            tried=taken,
            detail="every port tried is in use; running without /metrics and health endpoints",
        )
        return None

    def start_background(self) -> None:
        self._beat = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="ops-heartbeat"),
            asyncio.create_task(self.sampler.run(), name="ops-sampler"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.port = None


async def start_operations(
    settings: Settings,
    redis: RedisClient,
    metrics: Metrics,
    *,
    subscriber_running: Callable[[], bool],
    breaker_open: Callable[[], bool],
    llm: object,
    redis_refusal: Callable[[], str | None] = lambda: None,
    process_index: int = 0,
    checks: Sequence[ReadinessCheck] | None = None,
    sample_interval: float = SAMPLE_INTERVAL_SECONDS,
) -> OperationsServer:
    """Start the operations port of a worker (nothing when ``METRICS_PORT`` is 0).

    ``subscriber_running`` says whether the broker runs, ``breaker_open`` whether the
    model's circuit breaker keeps events away (and refreshes ``acp_groq_breaker_state``),
    ``llm`` is the worker's provider (readiness asks its rate limiter, if it has one),
    ``redis_refusal`` why Redis refuses the writes of events now (None while it accepts).
    ``process_index`` is the process's index under ``faststream run --workers N``: the
    server listens on ``METRICS_PORT + process_index`` or the next free port above it.
    ``checks`` replaces ``default_checks(...)``.
    """
    sampler = GroupSampler(
        redis,
        metrics,
        settings.insight_stream,
        settings.insight_group,
        interval=sample_interval,
        # an open breaker turns half-open with time: keep acp_groq_breaker_state true
        refresh=[breaker_open],
        # also with EVENT_ORDER=fifo: jobs a priority deployment left would show
        scheduler=settings.redis_mode is RedisMode.STANDALONE,
    )
    if checks is None:
        checks = default_checks(
            settings,
            redis,
            subscriber_running=subscriber_running,
            breaker_open=breaker_open,
            llm=llm,
            redis_refusal=redis_refusal,
        )
    server = OperationsServer(metrics, checks, sampler)
    if settings.metrics_port == 0:
        log.info("metrics_disabled", detail="METRICS_PORT=0: no HTTP server")
        return server
    first = settings.metrics_port + process_index
    last = min(65_535, first + PORT_SEARCH_SPAN - 1)
    port = await server.listen(range(first, last + 1))
    if port is not None:
        server.start_background()
        log.info(
            "metrics_listening",
            port=port,
            process_index=process_index,
            endpoints=["/metrics", "/health/live", "/health/ready"],
        )
    return server
