"""A loopback HTTP server that speaks Groq's chat-completions API, for tests and benchmarks.

The real ``groq`` SDK talks to it over a socket (``base_url=http://127.0.0.1:PORT``), so
its transport, headers, timeouts and error mapping are exercised for real. It answers
``POST /openai/v1/chat/completions`` (Groq) and ``POST /v1/chat/completions`` (OpenAI-
compatible servers) with a JSON insight built from the prompt, after ``latency`` seconds.

Behaviour is scripted: ``script`` is a queue of actions consumed one per request
(``{"status": 500}``, ``{"status": 429, "retry_after": 2}``, ``{"delay": 30}``,
``{"hold": true}``: answer only once ``release()`` is called (in process), ``{"content":
"prose"}``: what the model generates, ``{"status": 400, "code":
"json_validate_failed", "failed_generation": "..."}``, ``{"echo": true}``: a model that
obeys whatever its prompt says as far as it can, answering with the whole user message as
the summary and the system message as the recommendation); ``models`` maps a model name to
a standing action for every request to it (``{"openai/gpt-oss-120b": {"status": 404,
"code": "model_not_found"}}``). Every request is logged (model, messages, time), and the
server tracks the most requests it ever had in flight at once.

What the model generates meets the request's ``response_format`` as Groq documents it
(console.groq.com/docs/structured-outputs, a community report of the schema error):

* ``{"type": "json_object"}`` (JSON mode): a generation that is not a JSON object is
  refused with **400** ``json_validate_failed``, the generation in ``failed_generation``
  (``"Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for
  more details."``). It is never a 200 with prose.
* ``json_schema`` with ``strict: true`` on a model without constrained decoding (Groq has
  it on ``openai/gpt-oss-*`` only): **400** ``invalid_request_error``, nothing generated.
* ``json_schema`` best effort (``strict`` false or absent): not JSON is the same 400; JSON
  that breaks the schema is a 400 ``json_validate_failed`` "Generated JSON does not match
  the expected schema ...
  Error: jsonschema: ...". The fake checks the subset of JSON Schema the worker's schema
  uses (type, required, additionalProperties false, enum).
* ``json_schema`` with ``strict: true`` on ``openai/gpt-oss-*``: constrained decoding, which
  Groq documents as never producing invalid JSON or breaking the schema. A scripted
  generation that breaks it is therefore not something Groq can answer: the fake refuses
  the *script* (400, type ``fake_script_error``) and records it in ``script_errors``,
  which the test fixtures fail on. Script prose for JSON mode or best effort instead (or
  the 400 itself). A generation cut short (``finish_reason: "length"``) is exempt: what was
  decoded so far, possibly nothing, is what a reasoning model that ran out of room returns.
* ``{"ignores_format": true}`` in an action, on ``/v1/chat/completions`` only: an
  OpenAI-compatible server without JSON mode, which answers the generation as it is
  (Groq always applies ``response_format``, so on Groq's path that is a script error too).
  Without it, ``/v1/chat/completions`` follows the rules above: the fake is Groq on both.

A scripted generation is answered whole, even past ``max_completion_tokens`` (Groq would
cut it and say ``finish_reason: "length"``; script that when it matters).

Rate limits, as Groq enforces them (optional): ``rpm_limit``/``tpm_limit`` give every model
a requests and a tokens bucket that hold a minute's worth and refill continuously.

* A request is metered when it is admitted: one request, and its prompt (1 token per 4
  characters) plus the output room it asks for (``max_completion_tokens``, or
  ``max_tokens``) are *reserved*. A request that does not fit now gets a **429** with
  ``retry-after`` (whole seconds), type ``requests`` or ``tokens``. (Groq's docs do not
  spell the reservation out; its 413s count ``max_completion_tokens`` in "Requested".)
* A request whose prompt plus output room exceeds the whole tokens-per-minute limit can
  never fit: it is refused with **413** (Groq's body: "Request too large for model ... on
  tokens per minute (TPM): Limit N, Requested M, please reduce your message size and try
  again ...", type ``tokens``, code ``rate_limit_exceeded``; the groq SDK raises a bare
  ``APIStatusError`` for it), however full the bucket, never let through once.
* When the answer is ready, the reservation is settled to what ``usage`` reports: prompt
  (less its cached prefix, which Groq does not count) plus the tokens generated; the room
  not used is given back. A scripted error gives back the whole reservation (nothing was
  generated); a ``json_validate_failed`` is charged like an answer (the model generated it).
  The ``x-ratelimit-*`` headers of every answer carry the buckets' state after that (resets
  as Go durations, ``7.66s``).

(Groq's ``-requests`` headers count the day; the fake's count its per-minute bucket, the
one it enforces.) ``block(seconds)`` answers 429 to everything for that long, with the
remaining time in ``retry-after``: a daily limit, reached.

Service tiers, as Groq documents them (console.groq.com/docs/flex-processing): a request's
``service_tier`` must be ``on_demand``, ``flex``, ``auto`` or ``performance`` (else 400). Flex
has its own buckets, ten times the limits above. While ``flex_full`` is set, a flex request
fails at once, unmetered, with **498** ``capacity_exceeded`` (the groq SDK raises a bare
``APIStatusError``); the others are answered as usual. ``stats.by_tier`` counts requests
by the tier they named (``default``: none).

Run it on its own (fault tests, benchmarks): ``python -m tests.support.fake_groq --port N
[--latency S] [--rpm N] [--tpm N]``; ``GET /_control/stats`` returns the counters (and
``script_errors``), ``GET /_control/requests`` the messages of every request received (with
``--record``), ``POST /_control/script`` appends actions (``{"limits": {"rpm": N, "tpm":
N}}`` sets the limits, ``{"block_seconds": S}`` blocks, ``{"release": true}`` lets held
answers go, ``{"flex_full": true|false}`` fills or frees flex), ``POST /_control/reset``
clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.fake_batches import FakeBatches

__all__ = ["FakeGroq"]

API_KEY = "gsk_TESTfake0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"

# The headers of an answer when no limit is enforced (the values of a real answer).
_UNMETERED_HEADERS = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "250000",
    "x-ratelimit-remaining-requests": "14399",
    "x-ratelimit-remaining-tokens": "249840",
    "x-ratelimit-reset-requests": "6s",
    "x-ratelimit-reset-tokens": "38ms",
}
# Groq's json_validate_failed messages: JSON mode, and a schema not met (best effort).
_JSON_FAILED = (
    "Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details."
)
_SCHEMA_FAILED = (
    "Generated JSON does not match the expected schema. Please adjust your prompt. See "
    "'failed_generation' for more details."
)
_NOT_JSON = "not a JSON object"
_SERVICE_TIERS = ("on_demand", "flex", "auto", "performance")
_FLEX_LIMIT_FACTOR = 10  # Groq: flex has "10x higher rate limits" than on-demand
# Models on which Groq decodes strict json_schema under constraint (its structured-outputs
# page); on others it refuses strict.
_CONSTRAINED_DECODING = ("openai/gpt-oss-",)


def _asks_strict(body: dict[str, Any], model: str) -> bool:
    """A strict ``json_schema`` asked of a model without constrained decoding."""
    fmt = body.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    strict = isinstance(spec, dict) and spec.get("strict") is True
    return strict and not model.startswith(_CONSTRAINED_DECODING)


@dataclass
class _Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    by_tier: dict[str, int] = field(default_factory=dict)
    cached_tokens: int = 0


@dataclass
class _Bucket:
    """A token bucket of ``limit`` units refilled evenly over a minute (Groq's meter)."""

    limit: int
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.at) * self.limit / 60.0)
        self.at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` units are there (never more than the limit: a 413's)."""
        return max(0.0, (cost - self.level) * 60.0 / self.limit)

    def reset_in(self) -> float:
        return max(0.0, (self.limit - self.level) * 60.0 / self.limit)


def _go_duration(seconds: float) -> str:
    """A duration as Go prints it in Groq's headers: ``38ms``, ``7.66s``, ``2m59.56s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.2f}".rstrip("0").rstrip(".") + "s"
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60.0)
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


class FakeGroq:
    """The fake server. ``await start()`` in a running loop; ``await stop()`` to end it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        api_key: str = API_KEY,
        record: bool = True,
        rpm_limit: int = 0,
        tpm_limit: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.api_key = api_key
        self.record = record
        self.script: deque[dict[str, Any]] = deque()
        self.models: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.stats = _Stats()
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit
        self.blocked_until = 0.0
        self.flex_full = False  # flex answers 498 capacity_exceeded while set
        # scripts Groq could not answer (see the module's docstring): a test's mistake
        self.script_errors: list[str] = []
        self._released = asyncio.Event()
        self._stopping = asyncio.Event()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._prefixes: set[tuple[str, str]] = set()
        self.batches = FakeBatches(self)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> FakeGroq:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.batches.routes(app)
        app.router.add_get("/_control/stats", self._stats)
        app.router.add_get("/_control/agents", self._agents)
        app.router.add_get("/_control/requests", self._requests)
        app.router.add_post("/_control/script", self._add_script)
        app.router.add_post("/_control/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._released.set()  # nothing held outlives the server
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests read ------------------------------------------------------------

    def prompts(self) -> list[str]:
        """Every message text the server received, for allow-list assertions."""
        return [m.get("content", "") for r in self.requests for m in r["messages"]]

    def release(self) -> None:
        """Let the answers held by ``{"hold": true}`` go (and any held later)."""
        self._released.set()

    def block(self, seconds: float) -> None:
        """Answer 429 to every request for ``seconds`` (retry-after: what is left)."""
        self.blocked_until = time.monotonic() + seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.stats.requests,
            "in_flight": self.stats.in_flight,
            "max_in_flight": self.stats.max_in_flight,
            "statuses": {str(k): v for k, v in self.stats.statuses.items()},
            "by_model": dict(self.stats.by_model),
            "by_tier": dict(self.stats.by_tier),
            "cached_tokens": self.stats.cached_tokens,
            "script_errors": list(self.script_errors),
        }

    # -- handlers -------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._answer(request)
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", ""))
        self.stats.by_model[model] = self.stats.by_model.get(model, 0) + 1
        if self.record:
            self.requests.append(
                {
                    "model": model,
                    "messages": body.get("messages", []),
                    "body": body,
                    "at": time.monotonic(),
                    "authorization": request.headers.get("Authorization", ""),
                    "path": request.path,
                }
            )
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API Key", "invalid_api_key")
        if request.path.startswith("/openai/") and _asks_strict(body, model):
            # Groq: strict mode (constrained decoding) is on a few models only; elsewhere a
            # request for it is refused, before any token is counted.
            return self._error(
                400, f"`strict` structured outputs are not supported by model `{model}`", None
            )
        tier = body.get("service_tier")
        tier_name = str(tier) if tier is not None else "default"
        self.stats.by_tier[tier_name] = self.stats.by_tier.get(tier_name, 0) + 1
        if tier is not None and tier not in _SERVICE_TIERS:
            return self._error(
                400, f"service_tier must be one of {', '.join(_SERVICE_TIERS)}", None
            )
        if tier == "flex" and self.flex_full:
            return self._error(
                498,
                "Flex tier capacity exceeded. Please try again later.",
                "capacity_exceeded",
                error_type="capacity_exceeded",
            )
        meter = f"{model}@flex" if tier == "flex" else model  # flex has buckets of its own
        left = self.blocked_until - time.monotonic()
        if left > 0:
            return self._error(
                429,
                "Rate limit reached: requests per day (RPD)",
                "rate_limit_exceeded",
                error_type="requests",
                retry_after=math.ceil(left),
                headers={
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": _go_duration(left),
                },
            )
        messages = body.get("messages", [])
        prompt_tokens = _tokens(sum(len(str(m.get("content", ""))) for m in messages))
        reserved = prompt_tokens + _output_room(body)
        metered = bool(self.rpm_limit or self.tpm_limit)
        tpm = self.tpm_limit * (_FLEX_LIMIT_FACTOR if tier == "flex" else 1)
        if tpm and reserved > tpm:
            return self._error(
                413,
                f"Request too large for model `{model}` in organization `org_fake` service "
                f"tier `{tier or 'on_demand'}` on tokens per minute (TPM): Limit {tpm}, "
                f"Requested {reserved}, please reduce your message size and try again. "
                "Visit https://console.groq.com/docs/rate-limits for more information.",
                "rate_limit_exceeded",
                error_type="tokens",
            )
        if metered:
            refused = self._admit(meter, reserved)
            if refused is not None:
                what, headers = refused
                return self._error(
                    429,
                    f"Rate limit reached for model `{model}`: {what}",
                    "rate_limit_exceeded",
                    error_type="tokens" if "TPM" in what else "requests",
                    retry_after=headers.pop("retry-after"),
                    headers=headers,
                )
        action = self.models.get(model) or (self.script.popleft() if self.script else {})
        if action.get("hold"):
            await self._released.wait()
        delay = float(action.get("delay", self.latency))
        if delay:  # cut short when the server stops: no test waits out a scripted hang
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        status = int(action.get("status", 200))
        if status != 200:
            headers = self._settle(meter, reserved, 0) if metered else {}
            return self._error(
                status,
                action.get("message", f"scripted error {status}"),
                action.get("code"),
                retry_after=action.get("retry_after"),
                failed_generation=action.get("failed_generation"),
                headers=headers,
            )
        content = action.get("content")
        if action.get("echo"):
            content = json.dumps(_echo(messages))
        if content is None:
            content = json.dumps(_insight_for(messages))
        finish_reason = action.get("finish_reason")
        refusal = self._format_refusal(request.path, body, action, content, finish_reason)
        if refusal is not None:
            kind, message = refusal
            if kind == "script":
                self.script_errors.append(f"{model}: {message}")
                if metered:
                    self._settle(meter, reserved, 0)
                return self._error(
                    400, message, "impossible_script", error_type="fake_script_error"
                )
            generated = prompt_tokens + _tokens(len(content))
            return self._error(
                400,
                message,
                "json_validate_failed",
                failed_generation=content,
                keep_empty_generation=True,
                headers=self._settle(meter, reserved, generated) if metered else {},
            )
        usage = (prompt_tokens, _tokens(len(content)))
        answer = self.completion_body(model, messages, content, usage, finish_reason=finish_reason)
        headers = dict(_UNMETERED_HEADERS)
        if metered:
            cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
            headers.update(self._settle(meter, reserved, sum(usage) - cached))
        self._count(200)
        return web.json_response(answer, headers=headers)

    def _format_refusal(
        self,
        path: str,
        body: dict[str, Any],
        action: dict[str, Any],
        content: str,
        finish_reason: str | None,
    ) -> tuple[str, str] | None:
        """Why Groq would not answer ``content`` as a 200 under the request's response
        format: ``("json", message)`` for its 400 json_validate_failed, ``("script", why)``
        for a generation Groq cannot produce at all; None when it answers it."""
        groq_path = path.startswith("/openai/")
        if action.get("ignores_format"):
            if groq_path:
                return "script", "Groq always applies response_format (ignores_format)"
            return None
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in {"json_object", "json_schema"} or finish_reason == "length":
            return None
        generated = _json_object(content)
        if kind == "json_object":
            return None if generated is not None else ("json", _JSON_FAILED)
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        problem = _NOT_JSON if generated is None else _schema_problem(generated, spec)
        if problem is None:
            return None
        model = str(body.get("model", ""))
        if spec.get("strict") is True and model.startswith(_CONSTRAINED_DECODING):
            return "script", (
                f"strict json_schema on {model} is constrained decoding: Groq cannot "
                f"generate {content[:60]!r} ({problem})"
            )
        if generated is None:
            return "json", _JSON_FAILED
        return "json", f"{_SCHEMA_FAILED} Error: jsonschema: {problem}"

    def _admit(self, model: str, tokens: int) -> tuple[str, dict[str, str]] | None:
        """Reserve one request and ``tokens`` of the model's buckets, or say why not.

        Returns None when admitted, else (what was exceeded, the 429's headers).
        """
        buckets = self._metered_buckets(model, tokens)
        wait = max((bucket.wait_for(cost) for bucket, cost in buckets.values()), default=0.0)
        if wait <= 0:
            for bucket, cost in buckets.values():
                bucket.level -= cost
            return None
        what = " and ".join(
            f"{kind} per minute ({'RPM' if kind == 'requests' else 'TPM'}): "
            f"Limit {bucket.limit}, Requested {cost}"
            for kind, (bucket, cost) in buckets.items()
            if bucket.wait_for(cost) > 0
        )
        headers = {**_UNMETERED_HEADERS, **self._limit_headers(buckets)}
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        return what, headers

    def _settle(self, model: str, reserved: int, used: int) -> dict[str, str]:
        """Settle an admitted request's reservation to the tokens it used; the headers."""
        buckets = self._metered_buckets(model, 0)
        if "tokens" in buckets:
            bucket = buckets["tokens"][0]
            bucket.level = min(float(bucket.limit), bucket.level + reserved - used)
        return self._limit_headers(buckets)

    def _metered_buckets(self, model: str, tokens: int) -> dict[str, tuple[_Bucket, int]]:
        """The model's limited buckets, refilled to now, with what ``tokens`` would cost."""
        now = time.monotonic()
        factor = _FLEX_LIMIT_FACTOR if model.endswith("@flex") else 1
        costs = {
            "requests": (self.rpm_limit * factor, 1),
            "tokens": (self.tpm_limit * factor, tokens),
        }
        buckets: dict[str, tuple[_Bucket, int]] = {}
        for kind, (limit, cost) in costs.items():
            if limit:
                bucket = self._buckets.setdefault(
                    (model, kind), _Bucket(limit=limit, level=float(limit), at=now)
                )
                bucket.refill(now)
                buckets[kind] = (bucket, cost)
        return buckets

    @staticmethod
    def _limit_headers(buckets: dict[str, tuple[_Bucket, int]]) -> dict[str, str]:
        headers = {}
        for kind, (bucket, _cost) in buckets.items():
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = _go_duration(bucket.reset_in())
        return headers

    def _count(self, status: int) -> None:
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    def _error(
        self,
        status: int,
        message: str,
        code: str | None,
        *,
        error_type: str = "invalid_request_error",
        retry_after: float | str | None = None,
        failed_generation: str | None = None,
        keep_empty_generation: bool = False,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._count(status)
        error: dict[str, Any] = {"message": message, "type": error_type}
        if code:
            error["code"] = code
        if failed_generation or (keep_empty_generation and failed_generation is not None):
            error["failed_generation"] = failed_generation
        headers = dict(headers or {})
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        return web.json_response({"error": error}, status=status, headers=headers)

    def completion_body(
        self,
        model: str,
        messages: list[dict[str, Any]],
        content: str,
        usage: tuple[int, int],
        *,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        """A chat completion as Groq answers it, with prompt caching as Groq reports it: a
        system message this model saw before is a cached prefix (its tokens, rounded down,
        in ``usage.prompt_tokens_details.cached_tokens``)."""
        system = next(
            (str(m.get("content", "")) for m in messages if m.get("role") == "system"), ""
        )
        cached = 0
        if system and (model, system) in self._prefixes:
            cached = min(len(system) // 4, usage[0])
        elif system:
            self._prefixes.add((model, system))
        self.stats.cached_tokens += cached
        return {
            "id": f"chatcmpl-{self.stats.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
                "prompt_tokens_details": {"cached_tokens": cached},
                "queue_time": 0.001,
                "prompt_time": 0.002,
                "completion_time": 0.01,
                "total_time": 0.013,
            },
            "x_groq": {"id": f"req_{self.stats.requests}"},
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _agents(self, request: web.Request) -> web.Response:
        """The agent_name of every recorded request, in order (tests name one per event)."""
        return web.json_response([_facts(r["messages"]).get("agent_name") for r in self.requests])

    async def _requests(self, request: web.Request) -> web.Response:
        """The model and messages of every recorded request, in order."""
        return web.json_response(
            [{"model": r["model"], "messages": r["messages"]} for r in self.requests]
        )

    async def _add_script(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if "script" in payload:
            self.script.extend(payload["script"])
        if "models" in payload:
            self.models.update(payload["models"])
        if "latency" in payload:
            self.latency = float(payload["latency"])
        if "limits" in payload:
            self.rpm_limit = int(payload["limits"].get("rpm", 0))
            self.tpm_limit = int(payload["limits"].get("tpm", 0))
            self._buckets.clear()
        if "block_seconds" in payload:
            self.block(float(payload["block_seconds"]))
        if payload.get("release"):
            self.release()
        if "flex_full" in payload:
            self.flex_full = bool(payload["flex_full"])
        return web.json_response({"queued": len(self.script)})

    async def _reset(self, request: web.Request) -> web.Response:
        self.script.clear()
        self.models.clear()
        self.requests.clear()
        self.script_errors.clear()
        self.stats = _Stats()
        self._buckets.clear()
        self._prefixes.clear()
        self.batches.reset()
        self.blocked_until = 0.0
        self.flex_full = False
        return web.json_response({"ok": True})


def _tokens(chars: int) -> int:
    """Tokens of a text of ``chars`` characters, as the fake counts them (1 per 4)."""
    return math.ceil(chars / 4)


def _output_room(body: dict[str, Any]) -> int:
    """The output tokens a request asks room for (Groq's name, or OpenAI's older one)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, or None when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def _schema_problem(value: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """What in ``value`` breaks the schema of a ``json_schema`` response format (the
    subset the worker's schema uses), in Groq's words; None when it is met."""
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return None
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    missing = [name for name in schema.get("required", []) if name not in value]
    if missing:
        return f"'' does not validate with /required: missing properties: {missing}"
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            return (
                f"'' does not validate with /additionalProperties: additionalProperties "
                f"{extra} not allowed"
            )
    for name, rule in properties.items():
        if name not in value or not isinstance(rule, dict):
            continue
        expected = _JSON_TYPES.get(str(rule.get("type")))
        if expected is not None and not isinstance(value[name], expected):
            return f"'/{name}' does not validate with /properties/{name}/type"
        if "enum" in rule and value[name] not in rule["enum"]:
            return f"'/{name}' does not validate with /properties/{name}/enum"
    return None


def _facts(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The facts JSON object of the user message of a request (empty if none)."""
    user = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
    start, end = user.find("{"), user.rfind("}")
    if 0 <= start < end:
        try:
            facts = json.loads(user[start : end + 1])
        except ValueError:
            return {}
        return facts if isinstance(facts, dict) else {}
    return {}


def _echo(messages: list[dict[str, Any]]) -> dict[str, str]:
    """The answer of a model that repeats everything it was given."""
    texts = {m.get("role"): str(m.get("content", "")) for m in messages}
    return {
        "summary": texts.get("user", ""),
        "risk": "critical",
        "recommendation": texts.get("system", ""),
    }


def _insight_for(messages: list[dict[str, Any]]) -> dict[str, str]:
    facts = _facts(messages)
    return {
        "summary": f"{facts.get('agent_name', 'An agent')} used {facts.get('tool_name')}; "
        f"decision {facts.get('decision')}.",
        "risk": str(facts.get("severity", "medium")),
        "recommendation": "Review the call.",
    }


async def _serve(port: int, latency: float, record: bool, rpm: int, tpm: int) -> None:
    fake = FakeGroq(port=port, latency=latency, record=record, rpm_limit=rpm, tpm_limit=tpm)
    await fake.start()
    print(f"fake-groq listening on {fake.base_url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--record", action="store_true", help="keep every request (memory)")
    parser.add_argument("--rpm", type=int, default=0, help="enforce requests per minute")
    parser.add_argument("--tpm", type=int, default=0, help="enforce tokens per minute")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.latency, args.record, args.rpm, args.tpm))


if __name__ == "__main__":
    main()
