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

from app.adapters.chat_errors import clean_message, error_fields, ratelimit_headers, status_error
from app.domain.errors import LLMError, TransientLLMError
from app.domain.ports import Completion, CompletionRequest
from app.domain.routing import is_reasoning_model, supports_json_schema

__all__ = ["GroqLLM"]


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
            raise TransientLLMError(
                "connection", clean_message(str(exc), api_key=self._api_key)
            ) from None
        except groq.APIStatusError as exc:
            message, code, failed_generation = error_fields(exc.body)
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
            headers=ratelimit_headers(raw.headers),
        )

    def _status_error(self, exc: groq.APIStatusError, message: str, code: str | None) -> LLMError:
        return status_error(
            exc.status_code,
            message,
            code,
            exc.response.headers,
            api_key=self._api_key,
            key_setting="GROQ_API_KEY",
        )
