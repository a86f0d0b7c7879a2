"""Reading chat-completions answers and error answers, shared by both LLM adapters."""

from __future__ import annotations

from typing import Any

import pytest

from app.adapters.chat_completions import completion, error_answer
from app.domain.errors import PermanentLLMError, TransientLLMError
from app.domain.ports import Completion

MODEL = "openai/gpt-oss-20b"
KEY = "gsk_" + "k" * 48


def answer(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "openai/gpt-oss-20b-0805",
        "choices": [{"message": {"content": '{"summary": "s"}'}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 9},
    }
    body.update(overrides)
    return body


def test_a_completion_carries_text_usage_the_answering_model_and_ratelimit_headers():
    """content, usage, the model that answered and only the x-* headers are read."""
    headers = {"x-ratelimit-remaining-tokens": "5000", "content-type": "application/json"}
    assert completion(answer(), headers, model=MODEL) == Completion(
        text='{"summary": "s"}',
        model="openai/gpt-oss-20b-0805",
        prompt_tokens=31,
        completion_tokens=9,
        finish_reason="stop",
        headers={"x-ratelimit-remaining-tokens": "5000"},
    )


def test_missing_or_odd_fields_fall_back_to_the_request_and_unknown_counts():
    """No model named, usage absent or not integers (a bool is no count): request's model, None."""
    body = answer(usage={"prompt_tokens": True, "completion_tokens": "9"})
    del body["model"]
    got = completion(body, {}, model=MODEL)
    assert (got.model, got.prompt_tokens, got.completion_tokens) == (MODEL, None, None)
    assert completion(answer(usage=None, model=""), {}, model=MODEL).model == MODEL


@pytest.mark.parametrize("body", [None, [], "text", {"object": "chat.completion"}])
def test_a_body_that_is_no_completion_is_a_transient_bad_response(body):
    """Not an object with a list of choices: ``bad_response``, worth another attempt."""
    with pytest.raises(TransientLLMError) as caught:
        completion(body, {}, model=MODEL)
    assert caught.value.kind == "bad_response"


@pytest.mark.parametrize(
    "choices",
    [[], [{"message": {"content": "  "}, "finish_reason": "length"}], [{"message": None}]],
)
def test_no_content_is_a_transient_empty_answer_naming_the_finish_reason(choices):
    """Empty content (a reasoning model out of tokens) is ``empty_answer``."""
    with pytest.raises(TransientLLMError) as caught:
        completion(answer(choices=choices), {}, model=MODEL)
    assert caught.value.kind == "empty_answer"
    finish = choices[0].get("finish_reason") if choices else None
    assert f"finish_reason={finish}" in caught.value.message


def test_json_validate_failed_with_a_generation_is_the_answer():
    """400 json_validate_failed carrying failed_generation: that prose is the completion."""
    body = {"error": {"code": "json_validate_failed", "failed_generation": "Risky call."}}
    got = error_answer(400, body, {}, model=MODEL, api_key=KEY, key_setting="GROQ_API_KEY")
    assert got == Completion(text="Risky call.", model=MODEL)


def test_json_validate_failed_without_a_generation_raises_a_permanent_error():
    """Nothing generated: a permanent ``bad_request``, not an empty insight."""
    body = {"error": {"code": "json_validate_failed", "failed_generation": "  "}}
    with pytest.raises(PermanentLLMError) as caught:
        error_answer(400, body, {}, model=MODEL, api_key=KEY, key_setting="GROQ_API_KEY")
    assert caught.value.kind == "bad_request"


def test_other_error_answers_raise_their_error_without_the_key():
    """A 429 is transient with its retry-after; a refused key names its setting only."""
    body = {"error": {"message": f"slow down {KEY}", "code": "rate_limit_exceeded"}}
    with pytest.raises(TransientLLMError) as slow:
        error_answer(429, body, {"retry-after": "2"}, model=MODEL, api_key=KEY, key_setting="K")
    assert slow.value.retry_after == 2.0
    assert KEY not in str(slow.value)
    refused = {"error": {"message": f"Invalid API Key {KEY}"}}
    with pytest.raises(PermanentLLMError) as caught:
        error_answer(401, refused, {}, model=MODEL, api_key=KEY, key_setting="LLM_API_KEY")
    assert caught.value.message == "the API key was refused (check LLM_API_KEY)"
    assert caught.value.__suppress_context__


def test_cached_prompt_tokens_are_read_from_usage():
    """``usage.prompt_tokens_details.cached_tokens`` is the prompt prefix served from cache."""
    body = answer(
        usage={
            "prompt_tokens": 300,
            "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 256},
        }
    )
    assert completion(body, {}, model=MODEL).cached_tokens == 256
    assert completion(answer(), {}, model=MODEL).cached_tokens is None
