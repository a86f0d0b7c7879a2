"""What the chat-completions adapters share: reading an error answer into the error tree.

Groq, OpenAI and the OpenAI-compatible servers (Ollama, vLLM, llama.cpp) answer errors
with an HTTP status, a JSON body and sometimes ``retry-after``/``x-ratelimit-*`` headers.
Messages are built from the status and the provider's error text only, with the API key
and anything secret-shaped removed.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.domain.errors import LLMError, PermanentLLMError, classify_status
from app.domain.sanitize import REDACTED, redact_secrets

__all__ = ["error_fields", "parse_retry_after", "ratelimit_headers", "status_error"]

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
