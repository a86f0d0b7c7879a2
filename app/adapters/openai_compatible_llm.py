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

from app.adapters.chat_completions import clean_message, completion, error_answer
from app.domain.errors import TransientLLMError
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
            return error_answer(
                status,
                body,
                headers,
                model=request.model,
                api_key=self._api_key,
                key_setting="LLM_API_KEY",
            )
        return completion(body, headers, model=request.model)
