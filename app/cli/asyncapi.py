"""``groq-worker asyncapi``: the worker's AsyncAPI 3.0 document, generated from the code.

    groq-worker asyncapi [--format yaml|json] [-o FILE]     print it, or write it to FILE
    groq-worker asyncapi --check [--dir DIR]                 compare with the committed files
    groq-worker asyncapi --html FILE                         write a self-contained HTML page

The document is what ``faststream docs gen [--yaml] app:app -o FILE`` writes, byte for byte:
the channels, messages and payload schemas come from the subscriber, the publishers and the
pydantic models, so a change to any of them shows in the document. It does not depend on
the environment (server URL, stream, group and consumer name are fixed in the code), so the
committed ``asyncapi/asyncapi.yaml`` and ``.json`` can be checked for drift anywhere.

Exit codes: 0 done (or no drift), 1 drift or a missing committed file, 2 bad usage or a bad
setting.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, Literal

from app.settings import Inbound, Settings, SettingsError, load_settings

__all__ = ["DOCUMENT_DIR", "document", "generate", "register"]

Format = Literal["yaml", "json"]
FORMATS: tuple[Format, ...] = ("yaml", "json")
DOCUMENT_DIR = Path("asyncapi")


def _specification(inbound: Inbound) -> Any:
    """The app's specification, built like ``app:app`` (settings from the environment, but
    the inbound asked for and, on Kafka, the contract's topic)."""
    from app.bootstrap import build_worker

    overrides: dict[str, object] = {"inbound": inbound}
    if inbound is Inbound.KAFKA:
        overrides["kafka_topic"] = Settings.model_fields["kafka_topic"].default
    worker = build_worker(load_settings(**overrides), configure_logs=False)
    return worker.app.schema.to_specification()


def generate(fmt: Format = "yaml", inbound: Inbound = Inbound.REDIS) -> str:
    """The document as text, exactly as ``faststream docs gen`` writes it (``inbound``:
    the worker reading the Redis stream, or a Kafka topic)."""
    specification = _specification(inbound)
    if fmt == "yaml":
        text: str = specification.to_yaml()
        return text
    return json.dumps(specification.to_jsonable(), indent=2)


def document() -> dict[str, Any]:
    """The document as a JSON object (what the HTML page and the tests read)."""
    loaded: dict[str, Any] = json.loads(generate("json"))
    return loaded


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "asyncapi",
        help="print, write, check or render the AsyncAPI document",
        description="The worker's AsyncAPI 3.0 document (the contract for gateway teams), "
        "generated from the code exactly as `faststream docs gen app:app` does.",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="yaml (default) or json; with -o, taken from the file's suffix when not given",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the document to FILE")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare DIR/asyncapi.yaml and DIR/asyncapi.json with the generated document; "
        "exit 1 with a unified diff when they differ",
    )
    parser.add_argument(
        "--dir",
        default=str(DOCUMENT_DIR),
        metavar="DIR",
        help=f"where the committed document lives, for --check (default {DOCUMENT_DIR})",
    )
    parser.add_argument(
        "--inbound",
        choices=[inbound.value for inbound in Inbound],
        default=Inbound.REDIS.value,
        help="the document of a worker reading the Redis stream (default) or Kafka "
        f"(INBOUND=kafka; committed in {DOCUMENT_DIR / 'kafka'})",
    )
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained HTML page of the document to FILE (no network needed)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.check and (args.output or args.html or args.format):
        print("groq-worker asyncapi: --check takes no --format, -o or --html", file=sys.stderr)
        return 2
    try:
        inbound = Inbound(args.inbound)
        if args.check:
            directory = Path(args.dir)
            if inbound is Inbound.KAFKA and directory == DOCUMENT_DIR:
                directory = DOCUMENT_DIR / "kafka"
            return _check(directory, inbound)
        return _emit(args, inbound)
    except SettingsError as exc:
        print(f"groq-worker asyncapi: {exc}", file=sys.stderr)
        return 2


def _emit(args: argparse.Namespace, inbound: Inbound) -> int:
    fmt: Format = args.format or _format_of(args.output)
    if args.html:
        from app.cli.asyncapi_html import render_html

        page = render_html(json.loads(generate("json", inbound)), source=generate("yaml", inbound))
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
        if not args.output:
            return 0
    text = generate(fmt, inbound)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _format_of(output: str | None) -> Format:
    return "json" if output and output.endswith(".json") else "yaml"


def _lines(text: str) -> list[str]:
    """Lines for a diff, each ending in a newline (the JSON document's last one does not)."""
    return [line if line.endswith("\n") else f"{line}\n" for line in text.splitlines(True)]


def _check(directory: Path, inbound: Inbound = Inbound.REDIS) -> int:
    drifted: list[Path] = []
    option = " --inbound kafka" if inbound is Inbound.KAFKA else ""
    for fmt in FORMATS:
        path = directory / f"asyncapi.{fmt}"
        expected = generate(fmt, inbound)
        if not path.is_file():
            print(f"{path}: missing", file=sys.stderr)
            drifted.append(path)
            continue
        committed = path.read_text(encoding="utf-8")
        if committed != expected:
            sys.stdout.writelines(
                difflib.unified_diff(
                    _lines(committed),
                    _lines(expected),
                    fromfile=f"{path} (committed)",
                    tofile=f"{path} (generated from the code)",
                )
            )
            drifted.append(path)
    if drifted:
        names = " and ".join(str(path) for path in drifted)
        print(
            f"{names}: differs from what the code generates; regenerate with\n"
            + "\n".join(
                f"  groq-worker asyncapi{option} -o {directory / f'asyncapi.{fmt}'}"
                for fmt in FORMATS
            ),
            file=sys.stderr,
        )
        return 1
    print(f"{directory}/asyncapi.yaml and asyncapi.json match the code")
    return 0
