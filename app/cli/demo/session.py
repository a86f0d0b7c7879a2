"""One demo run from start to end, and the signals that end it early.

Picks the Redis (``redis_choice``), starts the worker in this process (``worker``) unless
``--publish-only``, publishes the sample and follows it (``follow``), reads back what the
worker wrote (``readback``) and prints it (``render``). Everything it starts is stopped
when it returns or is cancelled: Ctrl-C, SIGTERM and SIGHUP cancel it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import time

from rich.console import Console

from app.adapters.redis_clients import connect_redis
from app.bootstrap import build_worker
from app.cli._common import EXIT_OK, EXIT_PROBLEM
from app.cli.demo import render
from app.cli.demo.events import sample_events
from app.cli.demo.follow import entries_done, follow, publish
from app.cli.demo.model import DemoRun
from app.cli.demo.readback import key_counts, results
from app.cli.demo.redis_choice import address, choose_redis
from app.cli.demo.worker import budget_for, worker_settings
from app.cli.lost_cancel import raise_lost_cancel
from app.settings import Settings

__all__ = ["run_demo"]


def _end_on_termination(received: list[signal.Signals]) -> None:
    """SIGTERM and SIGHUP cancel the run (noted in ``received``), so what it started stops.

    Ctrl-C does so already (``asyncio.run`` cancels the main task on SIGINT). Without
    this, SIGTERM would end the process at once and leave its server running.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def cancel(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, cancel, sig)


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_demo(
    options: argparse.Namespace,
    settings: Settings,
    console: Console,
    received: list[signal.Signals],
) -> int:
    """The exit code of one run; a signal that ends it is appended to ``received``."""
    _end_on_termination(received)
    async with contextlib.AsyncExitStack() as stack:
        configured = str(settings.redis_url)
        chosen = await choose_redis(options, configured, settings.redis_mode, stack)
        if chosen is None:
            print(
                f"groq-worker demo: nothing answers at {address(configured)} (REDIS_URL); "
                "--publish-only needs the Redis that a worker reads",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        settings = settings.model_copy(update={"redis_mode": chosen.mode})
        redis_url = chosen.url

        redis = connect_redis(
            redis_url, settings.redis_mode, socket_connect_timeout=5.0, socket_timeout=10.0
        )
        stack.push_async_callback(redis.aclose)
        run_id = secrets.token_hex(2)
        entries = sample_events(options.events, run_id=run_id, now=time.time())
        run = DemoRun(settings, redis_url, chosen.server, run_id, entries)

        if not options.publish_only:
            budget = await budget_for(redis, options.budget, run.entries)
            run.settings = worker_settings(options, settings, redis_url, budget)
            run.worker = build_worker(run.settings, lane_tick_seconds=0.2)
        render.print_header(console, run, chosen.description)
        if run.worker is not None:
            run.live = await stack.enter_async_context(run.worker.running())
        # A Ctrl-C that met a Redis reply is lost under Python 3.11: raised here, after each
        # step that talks to Redis (and in follow's loop), instead of never.
        raise_lost_cancel()
        run.entry_ids = await publish(redis, run.settings.insight_stream, entries)
        raise_lost_cancel()
        finished = await follow(redis, run, console, options.timeout)
        if not finished:
            done = await entries_done(redis, run.settings, run.entry_ids)
            console.print(
                f"[red]{done} of {len(run.entry_ids)} entries reached an outcome within "
                f"{options.timeout:g} s[/red]; `groq-worker status` shows what is pending."
            )
        outcomes = await results(redis, run)
        console.print(render.insights_table(outcomes, run))
        if run.worker is not None:
            console.print(render.outcomes_table(run.worker))
            console.print(render.tokens_line(run.worker))
            if run.settings.groq_batch_severities:
                console.print(render.batch_lane_line(outcomes, run.worker))
        counts = await key_counts(redis, run, outcomes)
        console.print(render.keys_table(counts, run, outcomes))
        keep_running = options.keep_running and finished and run.worker is not None
        render.print_footer(console, run, keep_running=keep_running)
        if keep_running:
            await _wait_for_stop()
        return EXIT_OK if finished else EXIT_PROBLEM
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the stack may suppress)
