"""A test that hangs is stopped, and says where: every thread's stack and every task's.

A hang in the suite would otherwise hold CI until its own time limit and tell nothing.
``HangWatch`` arms a timer per test (``TEST_HANG_SECONDS``, default 300: no test here
takes a tenth of it); when it fires, the stacks of every thread and of every asyncio task
of the test's loop go to stderr (``before_dump`` lets pytest's capture go first) and to
``<tmp>/acp-test-hang-<pid>.txt`` (``.ci/run`` prints those), and the process exits (under
xdist: the worker is reported crashed, with the test's name).
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

__all__ = ["HangWatch"]


class HangWatch:
    def __init__(self, seconds: float, *, before_dump: Callable[[], object] = lambda: None):
        self.seconds = seconds
        self.before_dump = before_dump
        self._timer: threading.Timer | None = None

    def arm(self, test: str) -> None:
        self.disarm()
        self._timer = threading.Timer(self.seconds, self._fire, args=(test,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, test: str) -> None:
        out = io.StringIO()
        out.write(f"\n=== {test} still running after {self.seconds:.0f}s: stacks ===\n")
        with tempfile.TemporaryFile("w+") as threads:
            faulthandler.dump_traceback(threads, all_threads=True)
            threads.seek(0)
            out.write(threads.read())
        for loop in _running_loops():
            try:
                tasks = list(asyncio.all_tasks(loop))
            except RuntimeError:  # the set changed while read: once more
                tasks = list(asyncio.all_tasks(loop))
            out.write(f"\n--- {len(tasks)} asyncio tasks ---\n")
            for task in tasks:
                out.write(f"\n{task!r}\n")
                for frame in task.get_stack():
                    out.write("".join(traceback.format_stack(frame, limit=1)))
        text = out.getvalue()
        Path(tempfile.gettempdir(), f"acp-test-hang-{os.getpid()}.txt").write_text(text)
        try:
            self.before_dump()
        finally:
            sys.stderr.write(text)
        sys.stderr.flush()
        os._exit(70)


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    """The event loops running in this process's threads (found on their stacks)."""
    loops = []
    for frame in sys._current_frames().values():
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if frame.f_code.co_name == "run_forever" and isinstance(
                candidate, asyncio.AbstractEventLoop
            ):
                loops.append(candidate)
                break
            frame = frame.f_back  # type: ignore[assignment]
    return loops
