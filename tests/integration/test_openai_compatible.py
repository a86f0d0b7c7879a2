"""The OpenAI-compatible provider passes the Groq provider's integration tests.

Every test in the first part runs twice, once per provider, against the loopback server:
the Groq SDK on ``/openai/v1/chat/completions`` and the compatible adapter (Ollama, vLLM,
llama.cpp) on ``/v1/chat/completions``. The second part covers what only compatible servers
do: other error bodies, no key, a base URL with or without ``/v1``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest
from aiohttp import web

from app.adapters.openai_compatible_llm import OpenAICompatibleLLM, chat_completions_url
from app.adapters.rate_limit import RateLimitedLLM
from app.bootstrap import build_worker
from app.domain.errors import PermanentLLMError, TransientLLMError
from app.domain.insights import InsightCreated
from app.domain.ports import CompletionRequest
from app.settings import Settings, SettingsError, load_settings
from tests.conftest import running
from tests.integration.test_worker_end_to_end import (
    ALLOWED_IN_THE_PROMPT,
    PLANTED_OUTSIDE_THE_ALLOW_LIST,
    event,
    request_sent_for,
    settle,
    write_in_both_wire_formats,
    xadd_raw,
)
from tests.support.fake_groq import API_KEY, FakeGroq
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration

FAST, DEEP = "openai/gpt-oss-20b", "openai/gpt-oss-120b"
JSON_MODE_MODEL = "qwen/qwen3-32b"  # no json_schema on Groq: the worker asks for JSON mode
DLQ = "acp:groq:dlq"
PATHS = {"groq": "/openai/v1/chat/completions", "openai-compatible": "/v1/chat/completions"}


@pytest.fixture(params=["groq", "openai-compatible"])
def provider(request) -> str:
    return str(request.param)


@pytest.fixture
def worker_settings(provider: str, fake_groq: FakeGroq, make_settings) -> Callable[..., Settings]:
    """Settings of a worker on ``provider``, pointed at the loopback server."""

    def make(**overrides: Any) -> Settings:
        if provider == "groq":
            values: dict[str, Any] = {"groq_base_url": fake_groq.base_url}
        else:
            values = {
                "llm_provider": "openai-compatible",
                "llm_base_url": fake_groq.base_url,
                "llm_api_key": API_KEY,
                "groq_api_key": None,
            }
        settings: Settings = make_settings(**{**values, **overrides})
        return settings

    return make


def consumed(worker: Any, result: str) -> float:
    return (
        worker.metrics.registry.get_sample_value(
            "acp_groq_events_consumed_total", {"result": result}
        )
        or 0.0
    )


def api_errors(worker: Any, kind: str) -> float:
    return (
        worker.metrics.registry.get_sample_value("acp_groq_api_errors_total", {"error_type": kind})
        or 0.0
    )


async def dead_letters(redis: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in reversed(await redis.lrange(DLQ, 0, -1))]


# -- the Groq provider's tests, on both providers -------------------------------------


async def test_backlog_written_before_first_start_is_processed(
    redis, fake_groq, worker_settings, provider
):
    """Events XADDed before the group exists are enriched, over the provider's own path."""
    for n in range(5):
        await xadd_raw(redis, event(n))
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 5, worker.metrics)
    for n in range(5):
        assert await redis.exists(f"acp:groq:insight:evt-{n}") == 1
    assert {r["path"] for r in fake_groq.requests} == {PATHS[provider]}
    assert fake_groq.requests[0]["authorization"] == f"Bearer {API_KEY}"


async def test_insight_keys_and_published_message_are_written(redis, fake_groq, worker_settings):
    """One event writes the insight (TTL), the indexes and the InsightCreated message."""
    await xadd_raw(redis, event(1, severity="critical", timestamp="2026-11-25T02:20:00Z"))
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    record = json.loads(await redis.get("acp:groq:insight:evt-1"))
    assert record["model"] == DEEP
    assert set(record["insight"]) == {"summary", "risk", "recommendation"}
    assert record["insight"]["risk"] == "critical"
    assert 86_000 < await redis.ttl("acp:groq:insight:evt-1") <= 86_400
    assert await redis.zscore("acp:groq:insights:timeline", "evt-1") == 1_795_573_200.0
    assert await redis.zscore("acp:groq:insights:by_tenant:acme", "evt-1") == 1_795_573_200.0
    assert await redis.lrange("acp:groq:insights:by_agent:billing-agent", 0, -1) == [b"evt-1"]
    [published] = await redis.xrange("acp:groq:insights:stream")
    payload = published[1][b"payload"]
    assert InsightCreated.model_validate_json(payload).event_id == "evt-1"


async def test_prompt_never_carries_raw_input_or_other_fields(redis, fake_groq, worker_settings):
    """Secrets planted outside the allow-list never reach the model's HTTP request."""
    settings = worker_settings()
    wire = await request_sent_for(redis, fake_groq, settings, PLANTED_OUTSIDE_THE_ALLOW_LIST)
    assert "SECRET" not in wire
    for allowed in ALLOWED_IN_THE_PROMPT:
        assert allowed in wire


async def test_both_wire_formats_are_enriched(redis, fake_groq, worker_settings, make_settings):
    """A gateway's raw `payload` entry and a FastStream-published entry both become insights."""
    await write_in_both_wire_formats(redis, make_settings())
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 2, worker.metrics)
    assert await redis.exists("acp:groq:insight:evt-1", "acp:groq:insight:evt-2") == 2


@pytest.mark.parametrize(
    ("script", "kind", "requests"),
    [
        ([{"status": 503}], "server", 2),
        ([{"status": 429, "retry_after": 0.2}], "rate_limit", 2),
        ([{"status": 498}], "capacity", 2),
        ([{"delay": 1.0}], "timeout", 2),
    ],
)
async def test_transient_errors_are_retried_then_enriched(
    redis, fake_groq, worker_settings, script, kind, requests
):
    """503, 429, 498 and a timeout: one failed attempt counted by kind, then the insight."""
    fake_groq.script.extend(script)
    await xadd_raw(redis, event(1))
    worker = build_worker(worker_settings(groq_timeout_seconds=0.3))
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    assert fake_groq.stats.requests == requests
    assert api_errors(worker, kind) == 1
    assert json.loads(await redis.get("acp:groq:insight:evt-1"))["attempts"] == 2
    assert await redis.llen(DLQ) == 0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "bad_request"), (401, "auth"), (403, "permission"), (422, "unprocessable")],
)
async def test_a_permanent_error_is_dead_lettered_after_one_request(
    redis, fake_groq, worker_settings, status, kind
):
    """4xx: one request, an `llm_permanent` dead letter naming the kind, never the key."""
    fake_groq.models[FAST] = {"status": status, "message": f"refused {API_KEY}"}
    await xadd_raw(redis, event(1))
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    assert fake_groq.stats.requests == 1
    [letter] = await dead_letters(redis)
    assert letter["reason"] == "llm_permanent"
    assert letter["error"].startswith(kind)
    assert API_KEY not in json.dumps(letter)


async def test_a_missing_deep_model_falls_back_to_the_fast_one(redis, fake_groq, worker_settings):
    """404 model_not_found on the deep model: the fast model answers, the record says so."""
    fake_groq.models[DEEP] = {"status": 404, "code": "model_not_found"}
    await xadd_raw(redis, event(1, severity="high"))
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    record = json.loads(await redis.get("acp:groq:insight:evt-1"))
    assert record["model"] == FAST
    assert record["fallback"] is True


async def test_a_prose_answer_becomes_the_summary(redis, fake_groq, worker_settings, provider):
    """Prose where JSON was asked still yields an insight: Groq in JSON mode refuses it
    with 400 json_validate_failed (the prose in failed_generation); a compatible server
    that ignores the response format answers it with a 200."""
    prose = "The agent tried to upload a file; deny was right."
    if provider == "groq":
        # A model Groq serves in JSON mode: under gpt-oss's strict json_schema (constrained
        # decoding) Groq could not have generated prose at all.
        settings = worker_settings(groq_model_fast=JSON_MODE_MODEL)
        fake_groq.script.append({"content": prose})
    else:
        settings = worker_settings()
        fake_groq.script.append({"content": prose, "ignores_format": True})
    await xadd_raw(redis, event(1))
    worker = build_worker(settings)
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    record = json.loads(await redis.get("acp:groq:insight:evt-1"))
    assert record["insight"]["summary"].startswith("The agent tried to upload a file")
    assert fake_groq.stats.statuses == {400 if provider == "groq" else 200: 1}
    if provider == "groq":
        assert fake_groq.requests[0]["body"]["response_format"] == {"type": "json_object"}


async def test_planted_secrets_in_the_answer_never_reach_redis(redis, fake_groq, worker_settings):
    """The sanitizer runs on either provider's answer: a key in the output is redacted."""
    leaked = "gsk_" + "A1b2C3d4" * 6
    fake_groq.script.append(
        {"content": json.dumps({"summary": f"key {leaked}", "risk": "high", "recommendation": "x"})}
    )
    await xadd_raw(redis, event(1))
    worker = build_worker(worker_settings())
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    stored = await redis.get("acp:groq:insight:evt-1")
    assert leaked.encode() not in stored
    assert b"[redacted:groq_api_key]" in stored


async def test_the_shared_limiter_wraps_either_provider(redis, fake_groq, worker_settings):
    """With limits set, calls go through the limiter and learn the server's TPM headers."""
    for n in range(3):
        await xadd_raw(redis, event(n))
    worker = build_worker(worker_settings(groq_rpm_limit=100))
    async with worker.running() as live:
        await settle(redis, 3, worker.metrics)
        assert isinstance(live.llm, RateLimitedLLM)
    allowance = worker.metrics.registry.get_sample_value(
        "acp_groq_limiter_allowance", {"model": FAST, "kind": "tpm"}
    )
    assert allowance is not None  # learned from x-ratelimit-limit-tokens: 250000
    assert 240_000 < allowance <= 250_000
    assert await redis.hget(f"acp:groq:limiter:{FAST}", "learned_tpm") == b"250000"


# -- what only compatible servers do ---------------------------------------------------


def test_the_base_url_may_name_the_root_or_v1() -> None:
    """`http://host:11434` and `http://host:8000/v1/` both reach /v1/chat/completions."""
    assert chat_completions_url("http://ollama:11434") == "http://ollama:11434/v1/chat/completions"
    assert chat_completions_url("http://vllm:8000/v1/") == "http://vllm:8000/v1/chat/completions"
    assert (
        chat_completions_url("https://api.groq.com/openai/v1")
        == "https://api.groq.com/openai/v1/chat/completions"
    )


async def test_a_base_url_ending_in_v1_works_end_to_end(redis, fake_groq, make_settings):
    """LLM_BASE_URL=http://host:port/v1 (the OpenAI SDK's habit) is not doubled."""
    await xadd_raw(redis, event(1))
    settings = make_settings(
        llm_provider="openai-compatible",
        llm_base_url=f"{fake_groq.base_url}/v1",
        llm_api_key=API_KEY,
    )
    worker = build_worker(settings)
    async with running(worker.app):
        await settle(redis, 1, worker.metrics)
    assert fake_groq.requests[0]["path"] == "/v1/chat/completions"
    sent = fake_groq.requests[0]["body"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["max_tokens"] >= 512
    assert sent["reasoning_effort"] == "low"


class _OddServer:
    """A loopback server answering what real compatible servers send in odd cases."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str, dict[str, str]]] = []
        self.authorization: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> _OddServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def _answer(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        status, text, headers = self.answers.pop(0)
        return web.Response(status=status, text=text, headers=headers)


@pytest.fixture
async def odd_server() -> AsyncIterator[_OddServer]:
    server = await _OddServer().start()
    try:
        yield server
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


REQUEST = CompletionRequest(
    model="llama3.2:3b", system="JSON", user="facts", max_completion_tokens=64
)


def compatible_llm(
    port: int, *, api_key: str | None, timeout_seconds: float = 5
) -> aclosing[OpenAICompatibleLLM]:
    """The compatible adapter on a loopback port, closed at the end of an ``async with``."""
    return aclosing(
        OpenAICompatibleLLM(
            base_url=f"http://127.0.0.1:{port}", api_key=api_key, timeout_seconds=timeout_seconds
        )
    )


@pytest.mark.parametrize(
    ("status", "body", "error", "kind"),
    [
        (404, '{"error": "model \\"llama3.2:3b\\" not found, try pulling it first"}',
         PermanentLLMError, "not_found"),  # Ollama
        (400, '{"object": "error", "message": "max_tokens too large", "code": 400}',
         PermanentLLMError, "bad_request"),  # vLLM
        (503, "<html>upstream down</html>", TransientLLMError, "server"),  # a proxy
        (200, "<html>not json</html>", TransientLLMError, "bad_response"),
        (200, '{"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}',
         TransientLLMError, "empty_answer"),
    ],
)  # fmt: skip
async def test_other_servers_error_bodies_map_to_the_error_tree(
    odd_server, status, body, error, kind
):
    """Ollama's string errors, vLLM's flat errors, HTML and empty answers are classified."""
    odd_server.answers.append((status, body, {}))
    async with compatible_llm(odd_server.port, api_key=None) as llm:
        with pytest.raises(error) as caught:
            await llm.complete(REQUEST)
    assert caught.value.kind == kind
    if status == 404:
        assert "not found" in caught.value.message
    assert odd_server.authorization == [None]  # no key configured: no Authorization header


async def test_a_compatible_429_carries_retry_after_and_usage_is_read(odd_server):
    """429 with retry-after: 2 → TransientLLMError(retry_after=2); a 200's usage and headers."""
    ok = {
        "model": "llama3.2:3b",
        "choices": [{"message": {"content": '{"summary": "s"}'}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 9},
    }
    odd_server.answers += [
        (429, '{"error": {"message": "slow down"}}', {"retry-after": "2"}),
        (200, json.dumps(ok), {"x-ratelimit-remaining-tokens": "99", "Server": "x"}),
    ]
    async with compatible_llm(odd_server.port, api_key="sk-local") as llm:
        with pytest.raises(TransientLLMError) as caught:
            await llm.complete(REQUEST)
        completion = await llm.complete(REQUEST)
    assert caught.value.kind == "rate_limit"
    assert caught.value.retry_after == 2.0
    assert (completion.prompt_tokens, completion.completion_tokens) == (31, 9)
    assert completion.headers == {"x-ratelimit-remaining-tokens": "99"}
    assert odd_server.authorization == ["Bearer sk-local"] * 2


async def test_a_server_that_is_not_there_is_a_connection_error_without_the_key() -> None:
    """Connection refused → transient `connection`; the key is in no message."""
    key = "sk-secret-local-key-0123456789"
    async with compatible_llm(free_port(), api_key=key, timeout_seconds=2) as llm:
        with pytest.raises(TransientLLMError) as caught:
            await llm.complete(REQUEST)
    assert caught.value.kind == "connection"
    assert key not in str(caught.value)


# -- settings -------------------------------------------------------------------------


def test_openai_compatible_without_a_base_url_refuses_to_start() -> None:
    """LLM_PROVIDER=openai-compatible and no LLM_BASE_URL: an error naming LLM_BASE_URL."""
    with pytest.raises(SettingsError, match="LLM_BASE_URL: required"):
        load_settings(_env_file=None, llm_provider="openai-compatible")


def test_a_model_outside_allowed_models_refuses_to_start() -> None:
    """ALLOWED_MODELS without the deep model: an error naming GROQ_MODEL_DEEP, not FAST."""
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, allowed_models="openai/gpt-oss-20b, llama3.2:3b")
    message = str(caught.value)
    assert "GROQ_MODEL_DEEP: 'openai/gpt-oss-120b' is not in ALLOWED_MODELS" in message
    assert "GROQ_MODEL_FAST" not in message
    settings = load_settings(
        _env_file=None,
        allowed_models="Qwen/Qwen2.5-7B-Instruct,llama3.2:3b",
        groq_model_fast="llama3.2:3b",
        groq_model_deep="Qwen/Qwen2.5-7B-Instruct",  # model names keep their case
    )
    assert settings.allowed_models == ("Qwen/Qwen2.5-7B-Instruct", "llama3.2:3b")


def test_per_model_limits_are_read_from_json() -> None:
    """GROQ_MODEL_LIMITS JSON sets one model's TPM; GROQ_RPM_LIMIT still applies to it."""
    settings = load_settings(
        _env_file=None,
        groq_rpm_limit=1000,
        groq_model_limits=json.loads('{"openai/gpt-oss-120b": {"tpm": 8000}}'),
    )
    limits = settings.limit_table.for_model(DEEP)
    assert (limits.rpm, limits.tpm) == (1000, 8000)
    with pytest.raises(SettingsError, match="GROQ_MODEL_LIMITS"):
        load_settings(_env_file=None, groq_model_limits={DEEP: {"tpm": -1}})
