"""The operations port of a running worker: /metrics, /health/live, /health/ready."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.faststream_workarounds import ensure_group
from app.bootstrap import Worker, build_worker
from app.operations.http import OperationsServer, breaker_check, redis_group_check, start_operations
from app.runtime.metrics import Metrics
from tests.conftest import running
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"
FAST = "openai/gpt-oss-20b"


def event(n: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "tenant_id": "acme",
        "agent_id": "billing-agent",
        "tool_name": "shell.exec",
        "decision": "deny",
        "severity": "low",
        "timestamp": 1_764_000_000 + n,
    }
    body.update(overrides)
    return body


async def get(port: int, path: str) -> tuple[int, str, str]:
    """GET a path of the operations port: status, content type, body."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_raw(port: int, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    """GET with exactly ``headers`` (no Accept-Encoding of the client's own, no
    decompression): status, response headers, body bytes as sent."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
        session.get(
            f"http://127.0.0.1:{port}{path}",
            headers=headers,
            skip_auto_headers=["Accept-Encoding"],
        ) as response,
    ):
        return response.status, response.headers, await response.read()


def samples(text: str, parse: Any = text_string_to_metric_families) -> dict[Any, float]:
    """Every sample of a Prometheus exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def start_operations_of(worker: Worker, **options: Any) -> OperationsServer:
    """The operations port of a built worker, handed what ``bootstrap`` hands it."""
    return await start_operations(
        worker.settings,
        worker.redis,
        worker.metrics,
        subscriber_running=lambda: worker.broker.running,
        breaker_open=lambda: False,  # a worker not started: its breaker is closed
        llm=None,  # and it has no model yet
        redis_refusal=lambda: worker.state.redis_refusal,
        **options,
    )


async def settle(redis: Any, expected: int, metrics: Metrics, within: float = 15.0) -> None:
    """Wait until the worker counted ``expected`` outcomes and nothing is pending."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = sum(
            metrics.events_consumed.labels(result=r)._value.get()
            for r in ("enriched", "duplicate", "rate_limited", "dead_lettered")
        )
        if done >= expected and (await redis.xpending(STREAM, GROUP))["pending"] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"worker did not settle on {expected} outcomes in {within}s")


async def wait_for_status(port: int, path: str, status: int, within: float) -> dict[str, Any]:
    """Poll ``path`` until it answers ``status`` (bounded); its JSON body."""
    deadline = time.monotonic() + within
    last: tuple[int, str] | None = None
    while time.monotonic() < deadline:
        try:
            code, _, body = await get(port, path)
        except aiohttp.ClientError as exc:
            last = (-1, repr(exc))
        else:
            last = (code, body)
            if code == status:
                return dict(json.loads(body))
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not answer {status} within {within}s; last: {last}")


@pytest.mark.cluster_smoke
async def test_metrics_over_http_count_each_outcome_of_a_scripted_run(
    redis, fake_groq, make_settings
):
    """Two enriched, a duplicate, a rate-limited, an invalid and a failed event, exactly."""
    port = free_port()
    fake_groq.models["deep-broken"] = {"status": 400, "code": "invalid_request_error"}
    # an insight of evt-dup exists already (a redelivery); tenant greedy spent its hour
    await redis.set("acp:groq:insight:evt-dup", json.dumps({"tenant_id": "acme"}), ex=600)
    await redis.set("acp:groq:rate_limit:greedy", 5, ex=3600)
    for body in (
        event(1),
        event(2),
        {**event(0), "event_id": "evt-dup"},
        event(3, tenant_id="greedy"),
        event(4, severity="critical"),  # the deep model answers 400: dead letter
    ):
        await redis.xadd(STREAM, {"payload": json.dumps(body)})
    await redis.xadd(STREAM, {"payload": "{not json"})

    worker = build_worker(
        make_settings(
            groq_base_url=fake_groq.base_url,
            metrics_port=port,
            insight_budget_per_hour_per_tenant=5,
            groq_model_deep="deep-broken",
        )
    )
    async with worker.running() as live:
        await settle(redis, 6, worker.metrics)
        await live.operations.sample_now()
        status, content_type, text = await get(port, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    found = samples(text)
    consumed = "acp_groq_events_consumed_total"
    assert value(found, consumed, result="enriched") == 2
    assert value(found, consumed, result="duplicate") == 1
    assert value(found, consumed, result="rate_limited") == 1
    assert value(found, consumed, result="dead_lettered") == 2
    assert value(found, "acp_groq_rate_limited_total", tenant_id="greedy") == 1
    assert value(found, "acp_groq_dead_letters_total", reason="invalid") == 1
    assert value(found, "acp_groq_dead_letters_total", reason="llm_permanent") == 1
    assert value(found, "acp_groq_api_errors_total", error_type="bad_request") == 1
    assert value(found, "acp_groq_event_latency_seconds_count", model=FAST) == 2
    assert value(found, "acp_groq_events_in_flight") == 0
    assert value(found, "acp_groq_dlq_size") == 2 == await redis.llen("acp:groq:dlq")
    assert value(found, "acp_groq_group_lag") == 0
    assert value(found, "acp_groq_group_pending") == 0
    assert fake_groq.stats.by_model == {FAST: 2, "deep-broken": 1}


@pytest.mark.redis_modes("standalone")  # a cluster's primary down: tests/faults
async def test_ready_follows_redis_while_live_stays_up(fake_groq, make_settings):
    """/health/ready is 503 while Redis is down and 200 once it is back; /live stays 200."""
    server = RedisServer().start()
    port = free_port()
    try:
        worker = build_worker(
            make_settings(redis_url=server.url, groq_base_url=fake_groq.base_url, metrics_port=port)
        )
        async with worker.running() as running_worker:
            body = await wait_for_status(port, "/health/ready", 200, within=10)
            assert body["checks"]["redis_group"] == {"ok": True, "detail": "ok"}
            assert body["checks"]["subscriber"]["ok"] is True

            server.stop()
            body = await wait_for_status(port, "/health/ready", 503, within=10)
            assert body["status"] == "not_ready"
            assert body["checks"]["redis_group"]["ok"] is False
            live_status, _, live = await get(port, "/health/live")
            assert live_status == 200
            assert json.loads(live)["status"] == "alive"
            # the sampler keeps trying through the outage instead of dying
            sampler = running_worker.operations.sampler
            sampler.interval = 0.1
            failures = worker.metrics.redis_errors.labels(operation="sample")
            deadline = time.monotonic() + 10
            while failures._value.get() < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert failures._value.get() >= 2

            server.start()  # same port, empty: the worker recreates the group
            body = await wait_for_status(port, "/health/ready", 200, within=30)
            assert body["status"] == "ready"
            assert (await get(port, "/health/live"))[0] == 200
            # and the sampler, still running, sees the new state
            client = aioredis.Redis.from_url(server.url)
            try:
                await client.lpush("acp:groq:dlq", "a", "b", "c")
            finally:
                await client.aclose()
            gauge = worker.metrics.dlq_size
            deadline = time.monotonic() + 10
            while gauge._value.get() != 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert gauge._value.get() == 3
    finally:
        server.close()


async def test_an_extra_check_can_hold_readiness(redis, make_settings):
    """A check added to the list (here a breaker that is open) turns /ready to 503."""

    class Breaker:
        is_open = True

    breaker = Breaker()
    port = free_port()
    worker = build_worker(make_settings(metrics_port=port, llm_provider="offline"))
    await ensure_group(redis, STREAM, GROUP)
    checks = [
        redis_group_check(worker.redis, STREAM, GROUP),
        breaker_check(lambda: breaker.is_open),
    ]
    ops = await start_operations_of(worker, checks=checks)
    try:
        status, _, text = await get(port, "/health/ready")
        assert status == 503
        assert json.loads(text)["checks"] == {
            "redis_group": {"ok": True, "detail": "ok"},
            "breaker": {"ok": False, "detail": "circuit breaker is open: not taking events"},
        }
        breaker.is_open = False
        status, _, text = await get(port, "/health/ready")
        assert status == 200
        assert json.loads(text)["status"] == "ready"
    finally:
        await ops.stop()
        await worker.redis.aclose()


async def test_an_open_model_breaker_makes_the_running_worker_not_ready(
    redis, fake_groq, make_settings
):
    """The model fails, the worker's breaker opens: /health/ready says 503 and why."""
    fake_groq.models[FAST] = {"status": 500}
    port = free_port()
    worker = build_worker(
        make_settings(
            groq_base_url=fake_groq.base_url,
            metrics_port=port,
            groq_max_attempts=1,
            breaker_failure_threshold=1,
            breaker_cooldown_seconds=600,
        )
    )
    async with running(worker.app):
        await wait_for_status(port, "/health/ready", 200, within=10)
        await redis.xadd(STREAM, {"payload": json.dumps(event(1))})
        body = await wait_for_status(port, "/health/ready", 503, within=15)
        assert body["checks"]["breaker"]["ok"] is False
        assert body["checks"]["redis_group"]["ok"] is True
        _, _, text = await get(port, "/metrics")
        assert value(samples(text), "acp_groq_breaker_state") == 2


@contextlib.contextmanager
def squatting_next_to_a_free_port() -> Iterator[int]:
    """A free port ``base`` whose neighbour ``base + 1`` is held by a listening socket."""
    for _ in range(20):
        base = free_port()
        squatter = socket.socket()
        try:
            squatter.bind(("0.0.0.0", base + 1))
        except OSError:
            squatter.close()
            continue
        with squatter:
            squatter.listen()
            yield base
        return
    pytest.skip("found no free port with a free neighbour to stage the conflict")


async def test_a_port_in_use_moves_the_server_to_the_next_free_one(redis, make_settings):
    """Process 1 wants METRICS_PORT+1; taken, it listens above it and the worker goes on."""
    with squatting_next_to_a_free_port() as base:
        worker = build_worker(make_settings(metrics_port=base, llm_provider="offline"))
        ops = await start_operations_of(worker, process_index=1)
        try:
            assert ops.port is not None
            assert base + 1 < ops.port < base + 17
            status, _, text = await get(ops.port, "/health/ready")
            # not started: the subscriber is not running, so not ready, and it says why
            assert status == 503
            assert json.loads(text)["checks"]["subscriber"]["ok"] is False
            assert (await get(ops.port, "/metrics"))[0] == 200
        finally:
            await ops.stop()
            await worker.redis.aclose()


async def test_metrics_port_zero_serves_nothing(redis, make_settings):
    """METRICS_PORT=0: the worker runs without an HTTP server."""
    worker = build_worker(make_settings(metrics_port=0, llm_provider="offline"))
    async with worker.running() as live:
        assert live.operations.port is None


async def test_unknown_lag_is_nan_not_zero(redis, make_settings):
    """Without the group the sampled lag and pending are NaN (unknown), never a false 0."""
    worker = build_worker(make_settings(metrics_port=0, llm_provider="offline"))
    ops = await start_operations_of(worker)
    try:
        await ops.sample_now()
        assert math.isnan(worker.metrics.group_lag._value.get())
        assert math.isnan(worker.metrics.group_pending._value.get())
        assert worker.metrics.dlq_size._value.get() == 0
    finally:
        await ops.stop()
        await worker.redis.aclose()


@contextlib.asynccontextmanager
async def metrics_port_with_counts(make_settings: Any) -> Any:
    """An operations port whose registry holds one sample of each contract metric."""
    port = free_port()
    worker = build_worker(make_settings(metrics_port=port, llm_provider="offline"))
    metrics = worker.metrics
    metrics.events_consumed.labels(result="enriched").inc(3)
    metrics.event_latency.labels(model=FAST).observe(0.4)
    metrics.dlq_size.set(2)
    metrics.rate_limited.labels(tenant_id="greedy").inc()
    metrics.api_errors.labels(error_type="server").inc(4)
    ops = await start_operations_of(worker)
    try:
        assert ops.port == port
        yield port
    finally:
        await ops.stop()
        await worker.redis.aclose()


def assert_contract_samples(found: dict[Any, float]) -> None:
    """The contract's five metrics, with the values ``metrics_port_with_counts`` set."""
    assert value(found, "acp_groq_events_consumed_total", result="enriched") == 3
    assert value(found, "acp_groq_event_latency_seconds_count", model=FAST) == 1
    assert value(found, "acp_groq_event_latency_seconds_sum", model=FAST) == 0.4
    assert value(found, "acp_groq_dlq_size") == 2
    assert value(found, "acp_groq_rate_limited_total", tenant_id="greedy") == 1
    assert value(found, "acp_groq_api_errors_total", error_type="server") == 4


async def test_a_plain_scrape_gets_the_text_format_uncompressed(redis, make_settings):
    """GET /metrics without Accept headers: Prometheus text format, not compressed."""
    async with metrics_port_with_counts(make_settings) as port:
        status, headers, body = await get_raw(port, "/metrics", {})
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in headers
    text = body.decode()
    assert "# EOF" not in text  # the OpenMetrics terminator: this is the text format
    assert_contract_samples(samples(text))


async def test_an_openmetrics_scrape_gets_openmetrics(redis, make_settings):
    """Accept: application/openmetrics-text gets the OpenMetrics format, ``# EOF`` ended."""
    accept = "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
    async with metrics_port_with_counts(make_settings) as port:
        status, headers, body = await get_raw(port, "/metrics", {"Accept": accept})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert_contract_samples(samples(text, openmetrics_families))


async def test_a_scrape_accepting_gzip_gets_gzip(redis, make_settings):
    """Accept-Encoding: gzip gets a gzip body that decompresses to the text format."""
    async with metrics_port_with_counts(make_settings) as port:
        status, headers, body = await get_raw(port, "/metrics", {"Accept-Encoding": "gzip"})
        _, _, plain = await get_raw(port, "/metrics", {})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = gzip.decompress(body).decode()
    assert len(body) < len(plain)
    assert_contract_samples(samples(text))
