"""A workaround: Python 3.11's ``asyncio.wait_for`` can lose a cancellation.

When a task is cancelled just as the awaitable it waits for through ``wait_for`` finishes,
3.11's ``wait_for`` returns that result instead of raising ``CancelledError``
(CPython gh-86296; 3.12 rewrote ``wait_for`` on ``asyncio.timeout`` and fixed it).
redis-py sends every command through ``wait_for`` when a socket timeout is set, so a
Ctrl-C landing on a Redis command's reply was lost: the demo ran to its end and exited 0.

The cancel request itself is not lost: ``Task.cancelling()`` still counts it (nothing
called ``uncancel()``). A loop that polls calls ``raise_lost_cancel()`` after its awaits,
and the cancellation goes on from there. On 3.12 and later it never finds one;
``tests/unit/test_lost_cancel.py`` says when 3.11's behaviour is gone.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_lost_cancel"]


def raise_lost_cancel() -> None:
    """Raise ``CancelledError`` if this task was cancelled and is running on regardless."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
