"""The suite's hang watch dumps the stacks of a hung test's threads and tasks, then exits."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support.hang_watch import HangWatch


def test_a_hang_leaves_every_task_stack_and_ends_the_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exits: list[int] = []
    fired = threading.Event()

    def exit_(code: int) -> None:
        exits.append(code)
        fired.set()

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loop = asyncio.new_event_loop()

    async def stuck_somewhere_recognisable() -> None:
        await asyncio.Event().wait()

    task = loop.create_task(stuck_somewhere_recognisable())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    watch = HangWatch(0.2, before_dump=lambda: None)
    watch.arm("tests/x.py::test_stuck")
    try:
        assert fired.wait(5.0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        task.cancel()
    assert exits == [70]
    [dump] = tmp_path.glob("acp-test-hang-*.txt")
    text = dump.read_text()
    assert "tests/x.py::test_stuck still running after 0s" in text
    assert "stuck_somewhere_recognisable" in text
    assert "await asyncio.Event().wait()" in text


def test_a_disarmed_watch_never_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    watch = HangWatch(0.1)
    watch.arm("t")
    watch.disarm()
    threading.Event().wait(0.3)
    assert exits == []
