"""A loopback HTTP server that speaks Groq's chat-completions API, for tests and benchmarks.

The real ``groq`` SDK talks to it over a socket (``base_url=http://127.0.0.1:PORT``), so
its transport, headers, timeouts and error mapping are exercised for real. It answers
``POST /openai/v1/chat/completions`` (Groq) and ``POST /v1/chat/completions`` (OpenAI-
compatible servers) with a JSON insight built from the prompt, after ``latency`` seconds.

Behaviour is scripted: ``script`` is a queue of actions consumed one per request
(``{"status": 500}``, ``{"status": 429, "retry_after": 2}``, ``{"delay": 30}``,
``{"content": "prose"}``, ``{"status": 400, "code": "json_validate_failed",
"failed_generation": "..."}``, ``{"echo": true}``: a model that obeys whatever its prompt
says as far as it can, answering with the whole user message as the summary and the
system message as the recommendation); ``models`` maps a model name to a standing action for every
request to it (``{"openai/gpt-oss-120b": {"status": 404, "code": "model_not_found"}}``).
Every request is logged (model, messages, time), and the server tracks the most requests
it ever had in flight at once.

Rate limits, as Groq enforces them (optional): ``rpm_limit``/``tpm_limit`` give every model
a requests and a tokens bucket that hold a minute's worth and refill continuously. A request
that does not fit gets a 429 with ``retry-after`` (whole seconds); every answer carries the
``x-ratelimit-*`` headers with the buckets' state (resets as Go durations, ``7.66s``). A
request costs its prompt (1 token per 4 characters) plus its answer, reported in ``usage``.
(Groq's ``-requests`` headers count the day; the fake's count its per-minute bucket, the
one it enforces.) ``block(seconds)`` answers 429 to everything for that long, with the
remaining time in ``retry-after``: a daily limit, reached.

Run it on its own (fault tests, benchmarks): ``python -m tests.support.fake_groq --port N
[--latency S] [--rpm N] [--tpm N]``; ``GET /_control/stats`` returns the counters,
``GET /_control/requests`` the messages of every request received (with ``--record``),
``POST /_control/script`` appends actions (``{"limits": {"rpm": N, "tpm": N}}`` sets the
limits, ``{"block_seconds": S}`` blocks), ``POST /_control/reset`` clears them.
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


@dataclass
class _Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
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
        return max(0.0, (min(cost, self.limit) - self.level) * 60.0 / self.limit)

    def reset_in(self) -> float:
        return (self.limit - self.level) * 60.0 / self.limit


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
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests read ------------------------------------------------------------

    def prompts(self) -> list[str]:
        """Every message text the server received, for allow-list assertions."""
        return [m.get("content", "") for r in self.requests for m in r["messages"]]

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
            "cached_tokens": self.stats.cached_tokens,
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
        left = self.blocked_until - time.monotonic()
        if left > 0:
            return self._error(
                429,
                "Rate limit reached: requests per day (RPD)",
                "rate_limit_exceeded",
                retry_after=math.ceil(left),
                headers={
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": _go_duration(left),
                },
            )
        action = self.models.get(model) or (self.script.popleft() if self.script else {})
        content = action.get("content")
        if action.get("echo"):
            content = json.dumps(_echo(body.get("messages", [])))
        if content is None:
            content = json.dumps(_insight_for(body.get("messages", [])))
        messages = body.get("messages", [])
        usage = (
            math.ceil(sum(len(str(m.get("content", ""))) for m in messages) / 4),
            math.ceil(len(content) / 4),
        )
        limit_headers = {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "250000",
            "x-ratelimit-remaining-requests": "14399",
            "x-ratelimit-remaining-tokens": "249840",
            "x-ratelimit-reset-requests": "6s",
            "x-ratelimit-reset-tokens": "38ms",
        }
        if self.rpm_limit or self.tpm_limit:
            refused, limit_headers = self._meter(model, sum(usage), limit_headers)
            if refused is not None:
                return self._error(
                    429,
                    f"Rate limit reached for model `{model}`: {refused}",
                    "rate_limit_exceeded",
                    retry_after=limit_headers.pop("retry-after"),
                    headers=limit_headers,
                )
        delay = float(action.get("delay", self.latency))
        if delay:
            await asyncio.sleep(delay)
        status = int(action.get("status", 200))
        if status != 200:
            return self._error(
                status,
                action.get("message", f"scripted error {status}"),
                action.get("code"),
                retry_after=action.get("retry_after"),
                failed_generation=action.get("failed_generation"),
            )
        self._count(200)
        return web.json_response(
            self.completion_body(
                model, messages, content, usage, finish_reason=action.get("finish_reason")
            ),
            headers=limit_headers,
        )

    def _meter(
        self, model: str, tokens: int, headers: dict[str, str]
    ) -> tuple[str | None, dict[str, str]]:
        """Charge one request of ``tokens`` to the model's buckets, or refuse it.

        Returns (what was exceeded or None, the x-ratelimit headers after the decision).
        """
        now = time.monotonic()
        headers = dict(headers)
        costs = {"requests": (self.rpm_limit, 1), "tokens": (self.tpm_limit, tokens)}
        buckets: dict[str, tuple[_Bucket, int]] = {}
        for kind, (limit, cost) in costs.items():
            if limit:
                bucket = self._buckets.setdefault(
                    (model, kind), _Bucket(limit=limit, level=float(limit), at=now)
                )
                bucket.refill(now)
                buckets[kind] = (bucket, cost)
        wait = max((bucket.wait_for(cost) for bucket, cost in buckets.values()), default=0.0)
        refused = None
        if wait > 0:
            refused = " and ".join(
                f"{kind} per minute ({'RPM' if kind == 'requests' else 'TPM'}): "
                f"limit {bucket.limit}"
                for kind, (bucket, cost) in buckets.items()
                if bucket.wait_for(cost) > 0
            )
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        else:
            for bucket, cost in buckets.values():
                bucket.level -= min(cost, bucket.limit)
        for kind, (bucket, _cost) in buckets.items():
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = _go_duration(bucket.reset_in())
        return refused, headers

    def _count(self, status: int) -> None:
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    def _error(
        self,
        status: int,
        message: str,
        code: str | None,
        *,
        retry_after: float | str | None = None,
        failed_generation: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._count(status)
        error: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
        if code:
            error["code"] = code
        if failed_generation:
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
        return web.json_response({"queued": len(self.script)})

    async def _reset(self, request: web.Request) -> web.Response:
        self.script.clear()
        self.models.clear()
        self.requests.clear()
        self.stats = _Stats()
        self._buckets.clear()
        self._prefixes.clear()
        self.batches.reset()
        self.blocked_until = 0.0
        return web.json_response({"ok": True})


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
