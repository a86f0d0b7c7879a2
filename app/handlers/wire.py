"""The wire formats of an inbound entry, read by the subscriber's parser and decoder.

* the gateway's ``XADD <stream> * payload '<json>'``: the body is the payload as is
  (FastStream's own parser would take a top-level ``data`` key for an envelope);
* FastStream's ``__data__`` format: its parser, unchanged.

What fits neither is not raised from the parser (which would leave the entry pending to
crash again): it is marked with ``INVALID_HEADER``, and the decoder turns the mark into
``InvalidEvent``, which the subscriber's exception handler dead-letters. A ``__data__``
field must hold a FastStream message: its binary format, or the JSON envelope with a
``data`` string (FastStream itself would take anything else for a body).

A gateway's ``traceparent`` and ``tracestate`` fields beside ``payload`` become headers of
the parsed message (where a FastStream message has them), so that the telemetry
middleware, which runs after the parser, makes the event's spans children of the
gateway's span.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream.redis.message import bDATA_KEY
from faststream.redis.parser import BinaryMessageFormatV1
from pydantic import ValidationError

from app.domain.dead_letters import entry_size
from app.domain.errors import InvalidEvent
from app.domain.events import AuditEvent
from app.domain.ports import Received
from app.domain.text import as_text

__all__ = [
    "INVALID_HEADER",
    "PAYLOAD_FIELD",
    "decode_entry",
    "entry_id",
    "entry_parser",
    "received",
]

PAYLOAD_FIELD = b"payload"
_TRACE_FIELDS = ((b"traceparent", "traceparent"), (b"tracestate", "tracestate"))
INVALID_HEADER = "x-acp-invalid"


_BINARY_HEADER = BinaryMessageFormatV1.IDENTITY_HEADER


def _envelope_problem(data: bytes) -> str | None:
    """Why ``data`` (a ``__data__`` field) is not a FastStream message, or None if it is."""
    if data.startswith(_BINARY_HEADER):
        # magic, version 1, then where the headers and the body start: within the field
        fixed = len(_BINARY_HEADER) + 10
        if len(data) < fixed or data[len(_BINARY_HEADER) : len(_BINARY_HEADER) + 2] != b"\x00\x01":
            return "its binary header is cut short or of an unknown version"
        headers_start = int.from_bytes(data[fixed - 8 : fixed - 4], "big")
        body_start = int.from_bytes(data[fixed - 4 : fixed], "big")
        if not fixed <= headers_start <= body_start <= len(data):
            return "its binary header points outside the field"
        return None
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "neither FastStream's binary format nor a JSON envelope"
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), str):
        return "a JSON envelope without a 'data' string"
    return None


def entry_parser(max_event_bytes: int) -> Callable[..., Awaitable[Any]]:
    """A parser for both wire formats; what fits neither is marked invalid, not raised."""

    async def parse_entry(raw: Any, default_parser: Callable[[Any], Awaitable[Any]]) -> Any:
        fields: Mapping[bytes, bytes] = raw["data"]
        problem: str | None = None
        size = entry_size(fields)
        if size > max_event_bytes:
            problem = f"entry is larger than MAX_EVENT_BYTES ({size} > {max_event_bytes} bytes)"
        elif PAYLOAD_FIELD not in fields:
            if bDATA_KEY in fields:
                malformed = _envelope_problem(fields[bDATA_KEY])
                if malformed is None:
                    try:
                        return await default_parser(raw)
                    except Exception as exc:  # any failure of it: not a FastStream message
                        malformed = f"FastStream could not read it ({type(exc).__name__})"
                problem = f"malformed FastStream message in '__data__': {malformed}"
            else:
                names = ", ".join(sorted(k.decode("utf-8", "replace") for k in fields)) or "none"
                problem = (
                    f"entry has no 'payload' field and is not a FastStream message "
                    f"(fields: {names})"
                )
        message = await default_parser({**raw, "data": {}})
        message.raw_message = raw
        message.body = b"" if problem else fields[PAYLOAD_FIELD]
        if problem:
            message.headers[INVALID_HEADER] = problem
        for field, header in _TRACE_FIELDS:
            value = fields.get(field)
            if value is not None:
                message.headers[header] = value.decode("utf-8", "replace")
        return message

    return parse_entry


async def decode_entry(message: Any, default_decoder: Callable[[Any], Awaitable[Any]]) -> Any:
    """The entry's body as an ``AuditEvent``, or ``InvalidEvent`` saying why it is not one.

    A valid event is parsed and validated in one pass over the bytes (pydantic's JSON
    parser): no ``json.loads`` into dicts validated again. Anything else takes the slow
    path below, so what an invalid entry is told is the same as before: ``InvalidEvent``
    for a body that is no JSON object, else the JSON object, which the handler's argument
    refuses with pydantic's ``ValidationError`` (dead-lettered with its field errors).
    """
    problem = message.headers.get(INVALID_HEADER)
    if problem:
        raise InvalidEvent(problem)
    try:
        return AuditEvent.model_validate_json(message.body)
    except ValidationError:
        pass
    try:
        text = message.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            f"payload is not UTF-8 text (byte 0x{message.body[exc.start]:02x} at {exc.start})"
        ) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("payload is JSON nested too deeply to read") from None
    if not isinstance(body, dict):
        raise InvalidEvent(f"payload is JSON but not an object (got {type(body).__name__})")
    return body


def entry_id(message: Any) -> str:
    """The stream entry id of a message (the ack and dead-letter key)."""
    # FastStream's in-memory TestRedisBroker has no stream ids: its message id stands in.
    raw_id = (message.raw_message.get("message_ids") or [message.message_id])[0]
    return as_text(raw_id)


def received(message: Any) -> Received:
    """The entry of ``message`` as received: what its dead letter keeps."""
    fields: Mapping[bytes, bytes] = message.raw_message["data"]
    field = (
        PAYLOAD_FIELD.decode()
        if PAYLOAD_FIELD in fields
        else bDATA_KEY.decode()
        if bDATA_KEY in fields
        else None
    )
    return Received(entry_id(message), fields, message.body or None, field)
