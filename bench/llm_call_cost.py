"""CPU per model call of the ways a worker can send the chat-completion request.

``python -m bench.llm_call_cost [--calls 1500] [--concurrency 32]``

Starts the lean fake Groq (``bench.lean_groq``, 0 ms latency) and sends the request the
worker sends for one event (``bench.common.completion_params``) through:

* the groq SDK's ``chat.completions.create`` on its aiohttp transport, and on httpx;
* the SDK's low-level ``client.post(path, body=..., cast_to=httpx.Response)`` (no per-call
  parameter transformation, no response models);
* a plain ``aiohttp.ClientSession.post`` and ``json.loads`` of the answer.

It prints the process's CPU time per call for each (``time.process_time``), which is what
the worker pays per event for its model call, the network wait excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import groq
import httpx

from app.domain.events import AuditEvent
from bench.common import completion_params, event_payload
from tests.support.redis_server import free_port

PATH = "/openai/v1/chat/completions"


async def cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    for _ in range(50):  # warm up: connections, imports, caches
        await call()
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await call()

    began = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - began) / calls * 1000


async def measure(base_url: str, calls: int, concurrency: int) -> list[tuple[str, float]]:
    params = completion_params(AuditEvent.model_validate_json(event_payload(5)))
    results = []
    sdk = groq.AsyncGroq(
        api_key="bench", base_url=base_url, max_retries=0, http_client=groq.DefaultAioHttpClient()
    )
    results.append(
        (
            "SDK chat.completions.create (aiohttp transport)",
            await cpu_per_call(lambda: sdk.chat.completions.create(**params), calls, concurrency),
        )
    )
    results.append(
        (
            "SDK client.post(body=..., cast_to=httpx.Response) + json",
            await cpu_per_call(lambda: _raw_post(sdk, params), calls, concurrency),
        )
    )
    await sdk.close()
    session = aiohttp.ClientSession()
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}

    async def plain() -> Any:
        async with session.post(base_url + PATH, data=json.dumps(params), headers=headers) as r:
            return json.loads(await r.read())

    results.append(
        (
            "plain aiohttp ClientSession.post + json.loads",
            await cpu_per_call(plain, calls, concurrency),
        )
    )
    await session.close()
    default = groq.AsyncGroq(api_key="bench", base_url=base_url, max_retries=0)
    results.append(
        (
            "SDK chat.completions.create (default httpx transport)",
            await cpu_per_call(
                lambda: default.chat.completions.create(**params), calls, concurrency
            ),
        )
    )
    await default.close()
    return results


async def _raw_post(sdk: groq.AsyncGroq, params: dict[str, Any]) -> Any:
    response = await sdk.post(PATH, body=params, cast_to=httpx.Response)
    return json.loads(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.lean_groq", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base_url}/_stats", timeout=2).close()
                break
            except OSError:
                time.sleep(0.05)
        try:
            import uvloop

            results = uvloop.run(measure(base_url, args.calls, args.concurrency))
        except ImportError:  # pragma: no cover
            results = asyncio.run(measure(base_url, args.calls, args.concurrency))
        for name, cpu_ms in results:
            print(f"{cpu_ms:6.3f} ms CPU per call  {name}")
    finally:
        fake.kill()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
