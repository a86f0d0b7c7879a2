"""What the chat-completions adapters share: reading an answer, or an error answer.

Groq, OpenAI and the OpenAI-compatible servers (Ollama, vLLM, llama.cpp) answer
``{"choices": [{"message": {"content"}, "finish_reason"}], "usage", "model"}``, and
errors with an HTTP status, a JSON body and sometimes ``retry-after``/``x-ratelimit-*``
headers. Error messages are built from the status and the provider's error text only,
with the API key and anything secret-shaped removed.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.domain.errors import LLMError, PermanentLLMError, TransientLLMError, classify_status
from app.domain.ports import Completion
from app.domain.sanitize import REDACTED, redact_secrets

__all__ = [
    "clean_message",
    "completion",
    "error_answer",
    "error_fields",
    "parse_retry_after",
    "ratelimit_headers",
    "status_error",
]

_MAX_ERROR_CHARS = 300


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds), if present."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``x-*`` headers of an answer (rate-limit state), names lower-cased."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-")}


def error_fields(body: object) -> tuple[str, str | None, str | None]:
    """(message, code, failed_generation) from the error bodies servers send.

    OpenAI/Groq/llama.cpp: ``{"error": {"message", "code"}}``; Ollama:
    ``{"error": "text"}``; vLLM: ``{"object": "error", "message", "code"}``.
    """
    if not isinstance(body, dict):
        return "", None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    message, code, failed = error.get("message"), error.get("code"), error.get("failed_generation")
    return (
        str(message) if message is not None else "",
        str(code) if code is not None and not isinstance(code, int) else None,
        failed if isinstance(failed, str) and failed.strip() else None,
    )


def clean_message(text: str, *, api_key: str) -> str:
    """An error text safe for logs and dead letters: no key, nothing secret-shaped."""
    if api_key:
        text = text.replace(api_key, REDACTED)
    return redact_secrets(text)[:_MAX_ERROR_CHARS]


def status_error(
    status: int,
    message: str,
    code: str | None,
    headers: Mapping[str, str],
    *,
    api_key: str,
    key_setting: str,
) -> LLMError:
    """The domain error for an HTTP error answer; a refused key names its setting."""
    error = classify_status(
        status,
        clean_message(message or f"HTTP {status}", api_key=api_key),
        code=code,
        retry_after=parse_retry_after(headers),
        headers=ratelimit_headers(headers),
    )
    if isinstance(error, PermanentLLMError) and error.kind == "auth":
        error.message = f"the API key was refused (check {key_setting})"
    return error


def error_answer(
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    model: str,
    api_key: str,
    key_setting: str,
) -> Completion:
    """What an error answer still says: the model's text, or the domain error (raised).

    A 400 ``json_validate_failed`` that carries ``failed_generation`` is an answer: the
    model answered, just not in valid JSON, and its prose still makes an insight.
    Anything else raises ``status_error``'s error.
    """
    message, code, failed_generation = error_fields(body)
    if status == 400 and code == "json_validate_failed" and failed_generation:
        return Completion(text=failed_generation, model=model)
    raise status_error(
        status, message, code, headers, api_key=api_key, key_setting=key_setting
    ) from None


def completion(body: object, headers: Mapping[str, str], *, model: str) -> Completion:
    """The answer of a chat completion: ``choices[0].message.content``, ``usage``, the
    answering ``model`` (``model`` when the answer names none) and the rate-limit headers.

    No choices, or no content (a reasoning model that spent its tokens thinking), is a
    ``TransientLLMError``: another attempt may answer.
    """
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(choices, list):
        raise TransientLLMError("bad_response", "the answer was not a chat completion")
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    finish = choice.get("finish_reason")
    if not isinstance(text, str) or not text.strip():
        raise TransientLLMError(
            "empty_answer", f"the model returned no content (finish_reason={finish})"
        )
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    answered_by = body.get("model")
    return Completion(
        text=text,
        model=answered_by if isinstance(answered_by, str) and answered_by else model,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_cached(usage),
        finish_reason=finish if isinstance(finish, str) else None,
        headers=ratelimit_headers(headers),
    )


def _cached(usage: Mapping[str, object]) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``: the prompt prefix served from cache."""
    details = usage.get("prompt_tokens_details")
    return _count(details.get("cached_tokens")) if isinstance(details, dict) else None


def _count(value: object) -> int | None:
    """A token count of ``usage``: an int (not a bool), else unknown."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
