"""Small asyncio helpers shared by the worker's loops."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["wait_or_timeout"]


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``event`` is set first (e.g. stopping); True if set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
