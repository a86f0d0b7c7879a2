"""``groq-worker``: the operator's command.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler`` (a function taking the parsed arguments and returning
the exit code). Run the worker itself with ``faststream run app:app``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.bootstrap import package_version
from app.cli import asyncapi, batch, consumers, demo, dlq, status

__all__ = ["build_parser", "main"]

# The command modules, in the order ``--help`` lists them.
_COMMANDS = (demo, status, consumers, dlq, batch, asyncapi)


def _version(args: argparse.Namespace) -> int:
    print(package_version())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groq-worker",
        description="Operate the acp-groq-worker. The worker itself runs with "
        "`faststream run app:app`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = commands.add_parser("version", help="print the worker's version")
    version.set_defaults(handler=_version)
    for module in _COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
