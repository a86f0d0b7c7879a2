"""The ``LLM`` port on any OpenAI-compatible server: Ollama, vLLM, llama.cpp, LiteLLM.

``POST {LLM_BASE_URL}/v1/chat/completions``. ``LLM_BASE_URL`` is the server's root
(``http://ollama:11434``); a URL that already ends in ``/v1`` (the OpenAI SDK's habit:
``http://vllm:8000/v1``, ``https://api.groq.com/openai/v1``) is used as it is.

Why aiohttp, directly: the groq SDK cannot reach these servers (it always prefixes
``/openai/v1``), and the ``openai`` SDK would be a new dependency, with its own retry
layer to turn off, for one POST and one JSON body. aiohttp is already installed (it is
the transport the Groq adapter runs on, measured at less than half httpx's CPU per
call), so one HTTP stack serves both providers. Timeouts: ``GROQ_TIMEOUT_SECONDS`` for
the whole call, at most 5 s of it to connect; the connection pool is not capped,
because ``WORKER_CONCURRENCY`` already bounds the calls in flight.

The request: the two messages, ``max_tokens`` (every compatible server knows it; not all
know ``max_completion_tokens``), ``response_format: {"type": "json_object"}`` (servers
that ignore it answer prose, which the service still turns into an insight), and
``reasoning_effort`` for reasoning models. One attempt per call; errors map as the Groq
adapter's do (``classify_status``, ``retry-after``); messages are made from the status
and the server's error text, never from the request or the key.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from app.adapters.chat_errors import clean_message, error_fields, ratelimit_headers, status_error
from app.domain.errors import LLMError, TransientLLMError
from app.domain.ports import Completion, CompletionRequest
from app.domain.routing import is_reasoning_model

__all__ = ["OpenAICompatibleLLM", "chat_completions_url"]


def chat_completions_url(base_url: str) -> str:
    """``<root>/v1/chat/completions``, or ``<base>/chat/completions`` if it ends in /v1."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/chat/completions"


class OpenAICompatibleLLM:
    """``LLM`` on a server that speaks OpenAI's ``/v1/chat/completions``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_seconds: float,
    ) -> None:
        self.url = chat_completions_url(base_url)
        self._api_key = api_key or ""
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(5.0, timeout_seconds)
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds a session to it).
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_tokens": request.max_completion_tokens,
            "response_format": {"type": "json_object"},
            "stream": False,
        }
        if request.reasoning_effort and is_reasoning_model(request.model):
            body["reasoning_effort"] = request.reasoning_effort
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            async with self._client().post(self.url, json=self._body(request)) as response:
                status = response.status
                headers = {k.lower(): v for k, v in response.headers.items()}
                raw = await response.read()
        except TimeoutError:
            raise TransientLLMError("timeout", "the model did not answer in time") from None
        except aiohttp.ClientError as exc:
            message = clean_message(f"{type(exc).__name__}: {exc}", api_key=self._api_key)
            raise TransientLLMError("connection", message) from None
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if status >= 400:
            message, code, failed_generation = error_fields(body)
            if status == 400 and code == "json_validate_failed" and failed_generation:
                # The model answered, just not in valid JSON: its prose is still an answer.
                return Completion(text=failed_generation, model=request.model)
            raise self._status_error(status, message, code, headers)
        return self._completion(request, body, headers)

    def _completion(
        self, request: CompletionRequest, body: object, headers: dict[str, str]
    ) -> Completion:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(choices, list):
            raise TransientLLMError("bad_response", "the server's answer was not a completion")
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        finish = choice.get("finish_reason")
        if not isinstance(text, str) or not text.strip():
            raise TransientLLMError(
                "empty_answer", f"the model returned no content (finish_reason={finish})"
            )
        usage = body.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return Completion(
            text=text,
            model=str(body.get("model") or request.model),
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
            finish_reason=str(finish) if finish is not None else None,
            headers=ratelimit_headers(headers),
        )

    def _status_error(
        self, status: int, message: str, code: str | None, headers: dict[str, str]
    ) -> LLMError:
        return status_error(
            status, message, code, headers, api_key=self._api_key, key_setting="LLM_API_KEY"
        )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
