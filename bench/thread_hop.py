"""What resolving a handler parameter in a worker thread costs, against a direct call.

FastStream's ``Context()`` is resolved by FastDepends with ``anyio.to_thread.run_sync``
(its ``use`` is synchronous); ``EventLoopContext`` (app/adapters/faststream_workarounds.py)
resolves on the event loop. ``.venv/bin/python -m bench.thread_hop`` prints the CPU per
call of each, on uvloop as the worker runs.
"""

from __future__ import annotations

import time

import anyio
import uvloop


def _value() -> int:
    return 1


async def _measure(calls: int = 20_000) -> tuple[float, float]:
    began = time.process_time()
    for _ in range(calls):
        await anyio.to_thread.run_sync(_value)
    hop = (time.process_time() - began) / calls * 1e6
    began = time.process_time()
    for _ in range(calls):
        _value()
    direct = (time.process_time() - began) / calls * 1e6
    return hop, direct


def main() -> None:
    hop, direct = uvloop.run(_measure())
    print(f"thread hop {hop:.1f} us CPU per call, direct {direct:.2f} us")


if __name__ == "__main__":
    main()
