"""Logging: structlog for our lines, the same processors for the standard library's.

JSON off a TTY, a readable console on one (``LOG_FORMAT``). Our own lines go straight
from structlog to stderr (the per-event canonical line is on the hot path, and the
standard library's records, handlers and locks cost more than the line itself); lines of
libraries (FastStream, redis, aiohttp) go through the standard library and a
``ProcessorFormatter`` with the same processors. Every line, ours or a library's, passes
the redaction processor, which removes the API key and anything shaped like a
credential, in messages, fields and exception tracebacks alike.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from app.domain.sanitize import REDACTED, redact_secrets
from app.runtime.tracing import add_trace_ids

__all__ = ["RedactSecrets", "configure_logging", "get_logger"]


# Fields the pipeline itself writes, or that hold ids validated against strict patterns:
# nothing to redact in them, and skipping them keeps redaction off the hot path.
_NOT_SECRET = frozenset(
    {
        "level",
        "logger",
        "timestamp",
        "outcome",
        "event_id",
        "tenant_id",
        "agent_id",
        "entry_id",
        "model",
        "consumer",
        "reason",
        "latency_ms",
        "attempts",
        "trace_id",
        "span_id",
    }
)


class RedactSecrets:
    """A structlog processor: no secret survives into a rendered log line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = [secret for secret in secrets if secret]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return redact_secrets(value)
        if isinstance(value, dict):
            return {key: self._clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes):
            return self._clean(value.decode("utf-8", errors="backslashreplace"))
        # Anything else is rendered through its repr (an exception, a client, a config
        # object): redact that text, or the renderer would print the key as is.
        return self._clean(repr(value))

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if key in _NOT_SECRET or key in {"exc_info", "_record", "_from_structlog"}:
                continue
            event_dict[key] = self._clean(value)
        return event_dict


class _StderrLogger:
    """structlog's output: one line to the current ``sys.stderr`` (tests swap it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*args: Any) -> _StderrLogger:
    return _StderrLogger(str(args[0]) if args else "acp.groq_worker")


def configure_logging(
    *, level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = (), trace_ids: bool = False
) -> None:
    """Configure structlog and the standard library's root logger once per process.

    ``trace_ids`` (tracing on): every line logged inside a span says its ``trace_id`` and
    ``span_id``; off, the processor is not even in the chain."""
    redact = RedactSecrets(secrets)
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),  # stdlib-style "%s" messages
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if trace_ids:
        shared.append(add_trace_ids)
    # Tracebacks are rendered to text before redaction, so a key inside an exception
    # message or a local variable's repr is removed too.
    final: list[Any] = [
        structlog.processors.format_exc_info,
        redact,
        renderer,
    ]
    # Not cached on first use: a reconfiguration (another key to redact, another level)
    # applies to every logger, also the module-level ones made before it.
    structlog.configure(
        processors=[*shared, *final],
        logger_factory=_stderr_logger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream logs each message it handles at INFO; our canonical line replaces that.
    logging.getLogger("faststream.access").setLevel(max(logging.WARNING, root.level))
    # httpx logs every request at INFO; the canonical event line already tells.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str = "acp.groq_worker") -> Any:
    return structlog.get_logger(name)
