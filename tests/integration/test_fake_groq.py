"""The loopback Groq answers as Groq documents it, seen through the real groq SDK.

Tests lean on the fake: where it is kinder than Groq (a request over the tokens-per-minute
limit let through, prose answered 200 in JSON mode, output room not reserved), the
worker's handling of what Groq really does goes untested. These pin the behaviours the
fake's docstring promises.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import groq
import pytest

from app.domain.prompt import INSIGHT_JSON_SCHEMA
from tests.support.fake_groq import API_KEY, FakeGroq

pytestmark = pytest.mark.integration

STRICT_MODEL = "openai/gpt-oss-20b"  # strict json_schema is constrained decoding here
JSON_MODE_MODEL = "qwen/qwen3-32b"
PROSE = "The agent tried to upload a file with curl; the gateway denied it."
CONFORMING = {"summary": "Upload blocked.", "risk": "high", "recommendation": "Review it."}


@pytest.fixture
async def client(fake_groq: FakeGroq) -> AsyncIterator[groq.AsyncGroq]:
    """The SDK as the worker configures it: no retries of its own."""
    sdk = groq.AsyncGroq(api_key=API_KEY, base_url=fake_groq.base_url, max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def messages(user: str = '{"agent_name": "a", "decision": "deny"}') -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer with a JSON object."},
        {"role": "user", "content": user},
    ]


def strict_schema() -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "insight", "schema": INSIGHT_JSON_SCHEMA, "strict": True},
    }


async def chat(client: groq.AsyncGroq, **params: Any) -> Any:
    """A raw chat completion: the parsed body and the headers."""
    body: dict[str, Any] = {"model": STRICT_MODEL, "messages": messages(), **params}
    response = await client.chat.completions.with_raw_response.create(**body)
    return await response.parse(), response.headers


# -- tokens per minute ------------------------------------------------------------------


async def test_a_request_larger_than_the_tpm_limit_is_413_even_on_a_full_bucket(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """Prompt + max_completion_tokens over TPM: 413 (a bare APIStatusError), every time."""
    fake_groq.tpm_limit = 1000
    prompt_tokens = math.ceil(sum(len(m["content"]) for m in messages()) / 4)  # the fake's count
    for _ in range(2):
        with pytest.raises(groq.APIStatusError) as refused:
            await chat(client, max_completion_tokens=1000)
        assert type(refused.value) is groq.APIStatusError  # no subclass of the SDK's for 413
        assert refused.value.status_code == 413
        error = refused.value.body["error"]  # type: ignore[index]
        assert error["type"] == "tokens"
        assert error["code"] == "rate_limit_exceeded"
        requested = re.search(
            r"tokens per minute \(TPM\): Limit 1000, Requested (\d+),", error["message"]
        )
        assert requested is not None, error["message"]
        assert int(requested.group(1)) == prompt_tokens + 1000
    assert fake_groq.stats.statuses == {413: 2}
    # nothing was charged: a request that fits goes at once, against a full bucket
    _answer, headers = await chat(client, max_completion_tokens=100)
    assert int(headers["x-ratelimit-remaining-tokens"]) > 1000 - 100 - 50


async def test_the_output_room_is_reserved_at_admission_and_settled_to_the_usage(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """A call in flight holds its whole max_completion_tokens; its answer gives back the
    room it did not use."""
    fake_groq.tpm_limit = 1000
    fake_groq.script.append({"hold": True})
    first = asyncio.create_task(chat(client, max_completion_tokens=600))
    while fake_groq.stats.in_flight < 1:
        await asyncio.sleep(0.01)

    with pytest.raises(groq.RateLimitError) as refused:  # 1000 - (prompt + 600) < 600
        await chat(client, max_completion_tokens=600)
    assert refused.value.body["error"]["type"] == "tokens"  # type: ignore[index]
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert int(refused.value.response.headers["x-ratelimit-remaining-tokens"]) < 600

    fake_groq.release()
    answer, headers = await first
    used = answer.usage.total_tokens - answer.usage.prompt_tokens_details.cached_tokens
    remaining = int(headers["x-ratelimit-remaining-tokens"])
    assert 1000 - used <= remaining <= 1000  # only the usage stays charged
    assert answer.usage.completion_tokens < 600
    _answer, _headers = await chat(client, max_completion_tokens=600)  # fits again
    assert fake_groq.stats.statuses == {200: 2, 429: 1}


async def test_max_tokens_is_reserved_like_max_completion_tokens(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """OpenAI's older name for the output room counts the same (compatible clients send it)."""
    fake_groq.tpm_limit = 1000
    with pytest.raises(groq.APIStatusError) as refused:
        await chat(client, max_tokens=1000)
    assert refused.value.status_code == 413


# -- response formats -------------------------------------------------------------------


async def test_json_mode_refuses_prose_with_400_json_validate_failed(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """JSON mode and a prose generation: Groq's 400, the prose in failed_generation."""
    fake_groq.script.append({"content": PROSE})
    with pytest.raises(groq.BadRequestError) as refused:
        await chat(client, model=JSON_MODE_MODEL, response_format={"type": "json_object"})
    assert refused.value.body == {
        "error": {
            "message": "Failed to generate JSON. Please adjust your prompt. See "
            "'failed_generation' for more details.",
            "type": "invalid_request_error",
            "code": "json_validate_failed",
            "failed_generation": PROSE,
        }
    }


async def test_json_mode_answers_a_json_object(fake_groq: FakeGroq, client: groq.AsyncGroq):
    fake_groq.script.append({"content": json.dumps(CONFORMING)})
    answer, _headers = await chat(
        client, model=JSON_MODE_MODEL, response_format={"type": "json_object"}
    )
    assert json.loads(answer.choices[0].message.content) == CONFORMING


@pytest.mark.parametrize(
    ("generation", "error"),
    [
        (PROSE, "Failed to generate JSON."),
        (json.dumps({"summary": "x"}), "Generated JSON does not match the expected schema."),
        (json.dumps({**CONFORMING, "risk": "dire"}), "/properties/risk/enum"),
        (json.dumps({**CONFORMING, "extra": 1}), "/additionalProperties"),
    ],
)
async def test_best_effort_json_schema_refuses_what_breaks_it(
    fake_groq: FakeGroq, client: groq.AsyncGroq, generation, error
):
    """json_schema without constrained decoding: a generation that is not JSON, or breaks
    the schema, is a 400 json_validate_failed carrying it."""
    fake_groq.script.append({"content": generation})
    best_effort = strict_schema()
    best_effort["json_schema"]["strict"] = False
    with pytest.raises(groq.BadRequestError) as refused:
        await chat(client, response_format=best_effort)
    body = refused.value.body["error"]  # type: ignore[index]
    assert body["code"] == "json_validate_failed"
    assert error in body["message"]
    assert body["failed_generation"] == generation


async def test_strict_json_schema_is_refused_on_a_model_without_constrained_decoding(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """strict: true on kimi-k2 (best effort only on Groq) is a 400, before any generation."""
    with pytest.raises(groq.BadRequestError) as refused:
        await chat(client, model="moonshotai/kimi-k2-instruct", response_format=strict_schema())
    assert "strict" in refused.value.body["error"]["message"]  # type: ignore[index]


async def test_strict_json_schema_on_gpt_oss_answers_what_meets_it(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """Constrained decoding: the fake's insights, an echo and a cut-short answer all go."""
    fake_groq.script.extend([{}, {"echo": True}, {"content": "", "finish_reason": "length"}])
    first, _ = await chat(client, response_format=strict_schema())
    echo, _ = await chat(client, response_format=strict_schema())
    cut, _ = await chat(client, response_format=strict_schema())
    assert set(json.loads(first.choices[0].message.content)) == set(CONFORMING)
    assert json.loads(echo.choices[0].message.content)["risk"] == "critical"
    assert cut.choices[0].finish_reason == "length"
    assert fake_groq.script_errors == []


async def test_prose_under_strict_json_schema_on_gpt_oss_is_a_script_error(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """Groq cannot generate prose under constrained decoding: the fake refuses the script
    (and the fixture would fail the test that wrote it)."""
    fake_groq.script.append({"content": PROSE})
    with pytest.raises(groq.BadRequestError) as refused:
        await chat(client, response_format=strict_schema())
    assert refused.value.body["error"]["type"] == "fake_script_error"  # type: ignore[index]
    assert len(fake_groq.script_errors) == 1
    assert "constrained decoding" in fake_groq.script_errors[0]
    fake_groq.script_errors.clear()  # this test's own mistake, made on purpose


async def test_only_a_compatible_server_may_ignore_the_response_format(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """``ignores_format`` answers prose with a 200 on /v1 (a server without JSON mode);
    on Groq's path it is a script error: Groq always applies the format."""
    fake_groq.script.append({"content": PROSE, "ignores_format": True})
    with pytest.raises(groq.BadRequestError):
        await chat(client, model=JSON_MODE_MODEL, response_format={"type": "json_object"})
    assert len(fake_groq.script_errors) == 1
    fake_groq.script_errors.clear()

    fake_groq.script.append({"content": PROSE, "ignores_format": True})
    status, body = await post_compatible(fake_groq, {"type": "json_object"})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == PROSE


async def post_compatible(fake_groq: FakeGroq, response_format: dict[str, Any]) -> Any:
    """A chat completion on the compatible path (the groq SDK always prefixes /openai/v1)."""
    payload = {
        "model": JSON_MODE_MODEL,
        "messages": messages(),
        "max_tokens": 100,
        "response_format": response_format,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_groq.base_url}/v1/chat/completions",
            json=payload,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        return response.status, await response.json()


# -- service tiers ----------------------------------------------------------------------


async def test_a_full_flex_tier_refuses_flex_requests_at_once_with_498(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    """Flex full: 498 capacity_exceeded (a bare APIStatusError), before any latency and
    unmetered; on-demand and tierless requests are answered as usual."""
    fake_groq.flex_full = True
    fake_groq.latency = 5.0
    fake_groq.rpm_limit = 1
    with pytest.raises(groq.APIStatusError) as refused:
        await asyncio.wait_for(chat(client, service_tier="flex"), 2.0)
    assert type(refused.value) is groq.APIStatusError
    assert refused.value.status_code == 498
    assert refused.value.body["error"]["code"] == "capacity_exceeded"  # type: ignore[index]
    fake_groq.latency = 0.0
    fake_groq.flex_full = False
    await chat(client, service_tier="flex")  # the refusal took nothing of flex's bucket
    await chat(client, service_tier="on_demand")  # the model's on-demand bucket is its own
    assert fake_groq.stats.statuses == {498: 1, 200: 2}
    assert fake_groq.stats.by_tier == {"flex": 2, "on_demand": 1}


async def test_flex_has_ten_times_the_limits_in_buckets_of_its_own(
    fake_groq: FakeGroq, client: groq.AsyncGroq
):
    fake_groq.rpm_limit = 1
    _answer, headers = await chat(client, service_tier="flex")
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    await chat(client)  # on-demand's one request of the minute
    with pytest.raises(groq.RateLimitError):
        await chat(client, service_tier="on_demand")
    assert fake_groq.stats.by_tier == {"flex": 1, "default": 1, "on_demand": 1}


async def test_an_unknown_service_tier_is_a_400(fake_groq: FakeGroq, client: groq.AsyncGroq):
    with pytest.raises(groq.BadRequestError) as refused:
        await chat(client, service_tier="fastest")
    assert "service_tier" in refused.value.body["error"]["message"]  # type: ignore[index]
