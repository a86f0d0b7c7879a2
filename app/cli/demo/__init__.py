"""``groq-worker demo``: the worker end to end in one command, with nothing else installed.

1. Redis: the one at ``REDIS_URL`` if it answers, otherwise a private ``redis-server`` (or
   the ``valkey-server`` of the ``demo`` extra) started for the run on a free loopback port
   and stopped at its end (``app.cli.demo.server``).
2. The real worker app (``build_worker``), started in this process as consumer ``demo``,
   with the offline model unless ``GROQ_API_KEY`` is set, its logs at WARNING so that the
   terminal shows the demo's own output.
3. A realistic sample of gateway events (``app.cli.demo.events``), written the way a gateway
   writes them: ``XADD <INSIGHT_STREAM> * payload '<json>'``.
4. Progress until the group has acknowledged every entry, then the insights as a table,
   the outcome counts of the worker's metric and where each key lives.

``--publish-only`` does steps 3 and 4 against a worker that runs elsewhere (the producer of
``deploy/docker-compose.yml``). Exits 0 once every entry reached an outcome, 1 if they did
not within ``--timeout``, Redis failed or no server could be started, 2 for a bad setting,
130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP before the end. ``--keep-running`` leaves
the worker and the Redis up for ``groq-worker status`` until Ctrl-C or SIGTERM (then 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import time
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console

from app.adapters.redis_clients import connect_redis
from app.bootstrap import build_worker
from app.cli._common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, at_least
from app.cli.demo import render
from app.cli.demo.events import (
    MIN_EVENTS,
    sample_events,
)
from app.cli.demo.follow import entries_done, follow, publish
from app.cli.demo.model import DemoRun
from app.cli.demo.readback import key_counts, results
from app.cli.demo.redis_choice import address, choose_redis
from app.cli.demo.server import ServerUnavailable
from app.cli.demo.worker import (
    AUTO_BUDGET,
    budget_for,
    worker_settings,
)
from app.cli.lost_cancel import raise_lost_cancel
from app.settings import Settings, SettingsError, load_settings

__all__ = ["register"]

EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP end with 128 + their number

DEFAULT_EVENTS = 20
MAX_EVENTS = 100_000
DEFAULT_TIMEOUT_SECONDS = 60.0
NARROWEST_OUTPUT = 140  # columns, when stdout is not a terminal (a log, a pipe)


# -- small helpers ----------------------------------------------------------------------


# -- the steps --------------------------------------------------------------------------


# -- what the terminal shows ------------------------------------------------------------


# -- the command ------------------------------------------------------------------------


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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


async def _run(
    options: argparse.Namespace,
    settings: Settings,
    console: Console,
    received: list[signal.Signals],
) -> int:
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
        redis_url, server, redis_text = chosen.url, chosen.server, chosen.description

        redis = connect_redis(
            redis_url, settings.redis_mode, socket_connect_timeout=5.0, socket_timeout=10.0
        )
        stack.push_async_callback(redis.aclose)
        run_id = secrets.token_hex(2)
        entries = sample_events(options.events, run_id=run_id, now=time.time())
        run = DemoRun(settings, redis_url, server, run_id, entries)

        if not options.publish_only:
            budget = await budget_for(redis, options.budget, run.entries)
            run.settings = worker_settings(options, settings, redis_url, budget)
            run.worker = build_worker(run.settings, lane_tick_seconds=0.2)
        render.print_header(console, run, redis_text)
        if run.worker is not None:
            await run.worker.app.start()
            stack.push_async_callback(run.worker.app.stop)
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


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # a log or a pipe: wide enough for the tables' rows
        console.width = max(console.width, NARROWEST_OUTPUT)
    return console


def _demo(options: argparse.Namespace) -> int:
    if options.publish_only and (options.budget is not None or options.keep_running):
        print(
            "groq-worker demo: --budget and --keep-running need the worker of the demo, "
            "not --publish-only",
            file=sys.stderr,
        )
        return EXIT_USAGE
    clash = [name for name in ("publish_only", "own_redis", "batch") if getattr(options, name)]
    if options.cluster and clash:
        flags = ", ".join("--" + name.replace("_", "-") for name in clash)
        print(
            f"groq-worker demo: --cluster starts a cluster of its own for the demo's worker; "
            f"not with {flags} (the batch lane does not run in cluster mode)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    received: list[signal.Signals] = []
    try:
        return asyncio.run(_run(options, settings, _console(), received))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM or SIGHUP: see _end_on_termination
        return 128 + int(received[0]) if received else EXIT_INTERRUPTED
    except ServerUnavailable as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except SettingsError as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RedisError, OSError) as exc:
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(
            f"groq-worker demo: Redis at {address(str(settings.redis_url))} failed "
            f"({problem}); `groq-worker demo --own-redis` runs on a Redis of its own",
            file=sys.stderr,
        )
        return EXIT_PROBLEM


# -- arguments --------------------------------------------------------------------------


def _event_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_EVENTS <= value <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {MIN_EVENTS} to {MAX_EVENTS}, got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the worker on sample events and show the insights (nothing to set up)",
        description="Start the worker on sample gateway events and show what it wrote. Uses "
        "the Redis at REDIS_URL when one answers there, otherwise starts redis-server (or the "
        "valkey-server of the demo extra) for the run; the "
        "offline model unless GROQ_API_KEY is set. Exits 0 once every event has an outcome.",
    )
    parser.add_argument(
        "--events",
        type=_event_count,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"sample entries to publish ({DEFAULT_EVENTS}; at least {MIN_EVENTS})",
    )
    parser.add_argument(
        "--budget",
        type=at_least(0),
        nargs="?",
        const=AUTO_BUDGET,
        default=None,
        metavar="N",
        help="INSIGHT_BUDGET_PER_HOUR_PER_TENANT of the demo's worker; --budget alone picks "
        "one that puts exactly one sample event over budget (rate_limited)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the worker (and the Redis the demo started) up for `groq-worker status`; "
        "Ctrl-C stops it",
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="start no worker: publish to the Redis at REDIS_URL for the worker that runs "
        "there, and show what it wrote",
    )
    parser.add_argument(
        "--own-redis",
        "--embedded",
        dest="own_redis",
        action="store_true",
        help="start a Redis of the demo's own even if one answers at REDIS_URL",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start a Redis Cluster of the demo's own (three primaries: redis-server and "
        "redis-cli on PATH) and run the worker on it with REDIS_MODE=cluster",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the offline model even if GROQ_API_KEY (or LLM_PROVIDER=openai-compatible) "
        "is set",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for every entry to reach an outcome ({DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="send low-severity events through the batch lane (GROQ_BATCH_SEVERITIES=low, a "
        "batch within about a second; the offline model answers batches at once, Groq's "
        "Batch API may take hours: add --offline)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the worker's log lines down to INFO"
    )
    parser.set_defaults(handler=_demo)
