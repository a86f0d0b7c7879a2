"""``groq-worker dlq``: list, replay and purge the dead letters in ``acp:groq:dlq``.

    groq-worker dlq list [--limit N] [--reason R] [--json]
    groq-worker dlq replay [--limit N] [--reason R] [--dry-run]
    groq-worker dlq purge --yes

Redis and the inbound stream come from the worker's settings (``REDIS_URL``,
``INSIGHT_STREAM``); with ``INBOUND=kafka`` a letter of a Kafka record goes back to its
topic (``KAFKA_BOOTSTRAP_SERVERS``). Exit codes: 0 done, 1 Redis unreachable or failing,
2 bad usage or a bad setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence

from app.adapters import dlq
from app.adapters.redis_clients import RedisClient
from app.cli._common import at_least, run_with_redis
from app.cli.kafka_send import kafka_sender
from app.domain.insights import DeadLetter, DeadLetterReason
from app.domain.keys import Keys
from app.settings import Settings

__all__ = ["register"]

ERROR_WIDTH = 60
LIST_DEFAULT_LIMIT = 50
COLUMNS = ("ENTRY ID", "FAILED AT", "REASON", "EVENT ID", "TENANT", "ATTEMPTS", "ERROR")

Action = Callable[[RedisClient, Settings], Awaitable[int]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, replay or purge dead letters",
        description=f"Operate the dead-letter queue {Keys.DLQ} (newest letters first).",
    )
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    reasons = [reason.value for reason in DeadLetterReason]

    listing = actions.add_parser("list", help="show dead letters, newest first")
    listing.add_argument(
        "--limit",
        type=at_least(1),
        default=LIST_DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N letters (default {LIST_DEFAULT_LIMIT})",
    )
    listing.add_argument("--reason", choices=reasons, help="only letters of this reason")
    listing.add_argument("--json", action="store_true", help="one JSON dead letter per line")
    listing.set_defaults(handler=_list)

    replaying = actions.add_parser(
        "replay",
        help="put dead letters back on the inbound stream, oldest first",
        description="XADD each letter's payload to the inbound stream (INSIGHT_STREAM) as the "
        "gateway does; a letter leaves the DLQ in the same atomic step. Letters without a "
        "payload stay and are reported.",
    )
    replaying.add_argument(
        "--limit", type=at_least(1), default=None, metavar="N", help="replay at most N letters"
    )
    replaying.add_argument("--reason", choices=reasons, help="only letters of this reason")
    replaying.add_argument(
        "--dry-run", action="store_true", help="change nothing; show what would be replayed"
    )
    replaying.set_defaults(handler=_replay)

    purging = actions.add_parser("purge", help="delete every dead letter (needs --yes)")
    purging.add_argument("--yes", action="store_true", help="really delete them")
    purging.set_defaults(handler=_purge)


# -- the handlers (sync: each runs its async action with asyncio.run) -----------------


def _list(args: argparse.Namespace) -> int:
    async def action(redis: RedisClient, settings: Settings) -> int:
        letters = await dlq.list_letters(redis, limit=args.limit, reason=args.reason)
        if args.json:
            for item in letters:
                print(_json_line(item))
            return 0
        total = await dlq.dlq_size(redis)
        if letters:
            _print_table([_row(item) for item in letters])
        which = f" of reason {args.reason}" if args.reason else ""
        print(f"{len(letters)} dead letter(s){which} shown, newest first; {Keys.DLQ} holds {total}")
        return 0

    return _run(action)


def _replay(args: argparse.Namespace) -> int:
    async def action(redis: RedisClient, settings: Settings) -> int:
        stream = settings.insight_stream
        try:
            async with kafka_sender(settings, dry_run=args.dry_run) as kafka:
                result = await dlq.replay(
                    redis,
                    stream=stream,
                    limit=args.limit,
                    reason=args.reason,
                    dry_run=args.dry_run,
                    kafka=kafka,
                )
        except dlq.ReplayInterrupted as exc:
            if not (exc.result.replayed or exc.result.skipped):
                raise exc.cause from None  # nothing happened: a plain Redis error
            _print_replay(exc.result)
            print(
                f"groq-worker: replay stopped, Redis failed: {_one_line(str(exc.cause))} "
                f"({len(exc.result.replayed)} letter(s) were replayed before; the rest are "
                "still in the DLQ)",
                file=sys.stderr,
            )
            return 1
        _print_replay(result)
        return 0

    return _run(action)


def _purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            f"groq-worker: dlq purge deletes every dead letter in {Keys.DLQ} and cannot be "
            "undone; run it again with --yes",
            file=sys.stderr,
        )
        return 2

    async def action(redis: RedisClient, settings: Settings) -> int:
        held = await dlq.purge(redis)
        print(f"purged {held} dead letter(s); {Keys.DLQ} is empty")
        return 0

    return _run(action)


# -- running against Redis ------------------------------------------------------------


def _run(action: Action) -> int:
    code, result = run_with_redis("dlq", lambda settings, redis: action(redis, settings))
    return code if result is None else result


# -- output ---------------------------------------------------------------------------


def _print_replay(result: dlq.ReplayResult) -> None:
    verb = "would replay" if result.dry_run else "replayed"
    for replayed in result.replayed:
        letter = replayed.letter
        stream = replayed.target or result.stream
        target = f"{stream} {replayed.stream_entry_id}" if replayed.stream_entry_id else ""
        print(
            f"{verb} {letter.entry_id} {letter.event_id or '-'} ({letter.reason.value})"
            + (f" -> {target}" if target else f" onto {result.stream}")
        )
    for skipped in result.skipped:
        print(f"skipped {_describe(skipped.letter)}: {_skip_text(skipped)}")
    causes = ", ".join(
        f"{cause.value}: {n}" for cause, n in sorted(result.skipped_by_cause.items())
    )
    summary = f"{verb} {len(result.replayed)} dead letter(s) onto {result.stream}"
    summary += f"; skipped {len(result.skipped)}" + (f" ({causes})" if causes else "")
    if result.dlq_size is not None:
        held = f"{Keys.DLQ} holds {result.dlq_size}"
        summary += f"; dry run, nothing changed ({held})" if result.dry_run else f"; {held}"
    print(summary)


def _describe(item: DeadLetter | dlq.UnreadableLetter) -> str:
    if isinstance(item, DeadLetter):
        return f"{item.entry_id} {item.event_id or '-'} ({item.reason.value})"
    return f"unreadable element {_truncate(_one_line(item.text), 40)!r}"


def _skip_text(skipped: dlq.Skipped) -> str:
    if skipped.cause is dlq.SkipCause.NO_PAYLOAD:
        return "no payload to replay (left in the DLQ)"
    if skipped.cause is dlq.SkipCause.GONE:
        return "no longer in the DLQ (replayed or purged by someone else)"
    problem = skipped.letter.problem if isinstance(skipped.letter, dlq.UnreadableLetter) else ""
    return f"{problem} (left in the DLQ)"


def _json_line(item: DeadLetter | dlq.UnreadableLetter) -> str:
    if isinstance(item, DeadLetter):
        return item.model_dump_json()
    return json.dumps({"unreadable": item.text, "problem": item.problem})


def _row(item: DeadLetter | dlq.UnreadableLetter) -> tuple[str, ...]:
    if isinstance(item, dlq.UnreadableLetter):
        return ("?", "-", dlq.UNREADABLE, "-", "-", "-", _truncate(item.problem, ERROR_WIDTH))
    return (
        item.entry_id,
        item.failed_at,
        item.reason.value,
        item.event_id or "-",
        item.tenant_id or "-",
        str(item.attempts),
        _truncate(_one_line(item.error), ERROR_WIDTH),
    )


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, files, tests)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*COLUMNS)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # Text: no markup in the data
        Console().print(table)
        return
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=False)]
    for row in (COLUMNS, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
