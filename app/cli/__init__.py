"""``groq-worker``: the operator's command.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler`` (a function taking the parsed arguments and returning
the exit code). Run the worker itself with ``faststream run app:app``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from app.bootstrap import package_version

__all__ = ["build_parser", "main"]

# Command modules, in the order ``--help`` lists them. A module that is not there yet is
# skipped, so each command can land on its own.
_COMMAND_MODULES = ("demo", "status", "consumers", "dlq", "asyncapi")


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
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.cli.{name}":
                raise
            continue
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
