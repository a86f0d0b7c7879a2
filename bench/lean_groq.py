"""A lean loopback fake of Groq's chat-completions endpoint, for benchmarks only.

The test suite's fake (``tests.support.fake_groq``) runs aiohttp's web framework, parses
every request body and builds an answer from the prompt: a few hundred microseconds of CPU
per request, which on a two-core machine competes with the process being measured. This
one is a bare ``asyncio.Protocol`` (uvloop when installed) speaking just enough HTTP/1.1
keep-alive to serve the groq SDK: it finds the end of each request (``Content-Length`` or
chunked), copies the ``model`` out of the body with a byte search, and answers a fixed
chat completion after ``--latency`` seconds (a timer, no task per request).

``python -m bench.lean_groq --port N [--latency S]``; ``GET /_stats`` returns the request
count, the connections accepted and the most
requests ever in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from typing import Any

__all__ = ["ANSWER_CONTENT", "main"]

ANSWER_CONTENT = json.dumps(
    {
        "summary": "The agent called a shell tool and the gateway denied it.",
        "risk": "low",
        "recommendation": "Review the call.",
    }
)

_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length\s*:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding\s*:\s*chunked", re.IGNORECASE)

_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"x-ratelimit-limit-requests: 14400\r\n"
    b"x-ratelimit-limit-tokens: 250000\r\n"
    b"x-ratelimit-remaining-requests: 14399\r\n"
    b"x-ratelimit-remaining-tokens: 249840\r\n"
    b"x-ratelimit-reset-requests: 6s\r\n"
    b"x-ratelimit-reset-tokens: 38ms\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Length: "
)


class Stats:
    requests = 0
    connections = 0
    in_flight = 0
    max_in_flight = 0


def _body(model: bytes) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.decode("utf-8", "replace"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER_CONTENT},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 40,
                "total_tokens": 160,
                "queue_time": 0.001,
                "prompt_time": 0.002,
                "completion_time": 0.01,
                "total_time": 0.013,
            },
            "x_groq": {"id": "req_bench"},
        },
        separators=(",", ":"),
    ).encode()


_RESPONSES: dict[bytes, bytes] = {}


def _response(model: bytes) -> bytes:
    cached = _RESPONSES.get(model)
    if cached is None:
        body = _body(model)
        cached = _HEADERS + str(len(body)).encode() + b"\r\n\r\n" + body
        if len(_RESPONSES) < 64:
            _RESPONSES[model] = cached
    return cached


def _stats_response() -> bytes:
    body = json.dumps(
        {
            "requests": Stats.requests,
            "connections": Stats.connections,
            "in_flight": Stats.in_flight,
            "max_in_flight": Stats.max_in_flight,
        }
    ).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _chunked_end(buffer: bytearray, start: int) -> tuple[int, bytes] | None:
    """(end of the chunked body, the body) if it is complete in ``buffer``, else None."""
    position, body = start, bytearray()
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0].strip() or b"0", 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", position)
            return None if trailer_end < 0 else (trailer_end + 2, bytes(body))
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


class FakeGroqProtocol(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[: head_end + 2])
            start = head_end + 4
            length = _CONTENT_LENGTH.search(head)
            if length is not None:
                end = start + int(length.group(1))
                if len(self.buffer) < end:
                    return
                body = bytes(self.buffer[start:end])
            elif _CHUNKED.search(head):
                done = _chunked_end(self.buffer, start)
                if done is None:
                    return
                end, body = done
            else:
                end, body = start, b""
            del self.buffer[:end]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"GET /_stats"):
            self._send(_stats_response())
            return
        Stats.requests += 1
        Stats.in_flight += 1
        Stats.max_in_flight = max(Stats.max_in_flight, Stats.in_flight)
        model = _MODEL.search(body)
        response = _response(model.group(1) if model else b"openai/gpt-oss-20b")
        if self.latency > 0:
            self.loop.call_later(self.latency, self._finish, response)
        else:
            self._finish(response)

    def _finish(self, response: bytes) -> None:
        Stats.in_flight -= 1
        self._send(response)

    def _send(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


async def serve(port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeGroqProtocol(latency), "127.0.0.1", port, reuse_address=True, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"lean-fake-groq listening on http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
