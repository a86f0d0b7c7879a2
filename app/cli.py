"""``groq-worker``: the operator's command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.bootstrap import package_version

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groq-worker",
        description="Operate the acp-groq-worker (run the worker itself with "
        "`faststream run app:app`).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the worker's version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(package_version())
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
