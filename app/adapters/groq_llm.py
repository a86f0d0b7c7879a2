"""The Groq adapter of the ``LLM`` port: the official SDK, one attempt per call.

The SDK's own retries are off (``max_retries=0``): the service owns the one retry layer.
It runs on the SDK's aiohttp transport, which costs less CPU per call than httpx's.
Errors become the domain's ``TransientLLMError``/``PermanentLLMError``, with messages
made from the status and the provider's error text, never from the request.
"""

from __future__ import annotations

from typing import Any

import groq
import httpx

from app.domain.errors import LLMError, PermanentLLMError, TransientLLMError, classify_status
from app.domain.ports import Completion, CompletionRequest
from app.domain.routing import is_reasoning_model, supports_json_schema
from app.domain.sanitize import redact_secrets

__all__ = ["GroqLLM", "parse_retry_after"]

_MAX_ERROR_CHARS = 300


def parse_retry_after(headers: httpx.Headers | dict[str, str]) -> float | None:
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


def _ratelimit_headers(headers: httpx.Headers) -> dict[str, str]:
    """The ``x-*`` headers of an answer (rate-limit state), names lower-cased."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-")}


def _error_fields(body: object) -> tuple[str, str | None, str | None]:
    """(message, code, failed_generation) from an OpenAI-style error body."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", None, None
    message = error.get("message")
    code = error.get("code")
    failed = error.get("failed_generation")
    return (
        str(message) if message is not None else "",
        str(code) if code is not None else None,
        failed if isinstance(failed, str) and failed.strip() else None,
    )


class GroqLLM:
    """``LLM`` on Groq's chat-completions API."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api_key = api_key
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
            http_client=http_client if http_client is not None else groq.DefaultAioHttpClient(),
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _clean(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[REDACTED]")
        return redact_secrets(text)[:_MAX_ERROR_CHARS]

    async def complete(self, request: CompletionRequest) -> Completion:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_completion_tokens": request.max_completion_tokens,
        }
        if request.reasoning_effort and is_reasoning_model(request.model):
            params["reasoning_effort"] = request.reasoning_effort
        if request.json_schema is not None and supports_json_schema(request.model):
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "insight", "schema": request.json_schema, "strict": True},
            }
        else:
            params["response_format"] = {"type": "json_object"}
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**params)
        except groq.APITimeoutError:
            raise TransientLLMError("timeout", "the model did not answer in time") from None
        except groq.APIConnectionError as exc:
            raise TransientLLMError("connection", self._clean(str(exc))) from None
        except groq.APIStatusError as exc:
            message, code, failed_generation = _error_fields(exc.body)
            if exc.status_code == 400 and code == "json_validate_failed" and failed_generation:
                # The model answered, just not in valid JSON: its prose is still an answer.
                return Completion(text=failed_generation, model=request.model)
            raise self._status_error(exc, message, code) from None
        completion = await raw.parse()
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content or "") if choice else ""
        finish = choice.finish_reason if choice else None
        if not text.strip():
            raise TransientLLMError(
                "empty_answer",
                f"the model returned no content (finish_reason={finish})",
            )
        usage = completion.usage
        return Completion(
            text=text,
            model=completion.model or request.model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=finish,
            headers=_ratelimit_headers(raw.headers),
        )

    def _status_error(self, exc: groq.APIStatusError, message: str, code: str | None) -> LLMError:
        error = classify_status(
            exc.status_code,
            self._clean(message or f"HTTP {exc.status_code}"),
            code=code,
            retry_after=parse_retry_after(exc.response.headers),
            headers=_ratelimit_headers(exc.response.headers),
        )
        if isinstance(error, PermanentLLMError) and error.kind == "auth":
            error.message = "the API key was refused (check GROQ_API_KEY)"
        return error
