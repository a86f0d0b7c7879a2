"""Dead letters of a bounded size, built from the entry as it was received.

Anyone who can write to the inbound stream can make dead letters, so a letter must not be
a way to fill Redis: it holds the event once (the entry's field the payload was read from
is not repeated in ``fields``), and an entry over ``MAX_EVENT_BYTES`` (which could never
be replayed anyway) leaves only excerpts of its fields, with its size and a SHA-256 of the
whole to identify it. The DLQ's length is capped by ``DLQ_MAX_ENTRIES`` where letters are
pushed (the store); this module bounds each letter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from app.domain.errors import LLMError
from app.domain.insights import DeadLetter, DeadLetterReason
from app.domain.text import as_text

__all__ = [
    "ERROR_CHARS",
    "EXCERPT_BYTES",
    "EXCERPT_TOTAL_BYTES",
    "build_dead_letter",
    "entry_size",
    "llm_failure_reason",
]

# Of an entry over the limit, in bytes of the letter's JSON: one field's excerpt, and all of
# them together (names included; later fields are left out).
EXCERPT_BYTES = 4_096
EXCERPT_TOTAL_BYTES = 16_384
ERROR_CHARS = 2_000  # of the error text


def llm_failure_reason(exc: LLMError) -> DeadLetterReason:
    """Why an event the model did not answer is dead-lettered: transient errors until the
    attempts ran out, or a refusal another attempt could not change."""
    return DeadLetterReason.LLM_EXHAUSTED if exc.transient else DeadLetterReason.LLM_PERMANENT


def entry_size(fields: Mapping[Any, Any]) -> int:
    """An entry's size in bytes: its field names and values (what MAX_EVENT_BYTES bounds)."""
    return sum(len(_raw(key)) + len(_raw(value)) for key, value in fields.items())


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _stored_size(text: str) -> int:
    """Bytes ``text`` takes in the letter's JSON (escapes and UTF-8 counted)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _excerpt(raw: bytes, room: int) -> str:
    """The start of ``raw`` as text that takes at most ``room`` bytes in the letter's JSON,
    however many bytes escaping costs (a control character takes six)."""
    # Decode only what can be kept: a 64 MB value is not turned into text whole.
    text = as_text(raw[:room])
    while text and _stored_size(text) > room:
        text = text[: len(text) * room // _stored_size(text)]
    return text


def _excerpts(fields: Mapping[Any, Any]) -> dict[str, str]:
    """The fields of an entry over the limit, each cut short, until the budget is spent."""
    budget = EXCERPT_TOTAL_BYTES
    kept: dict[str, str] = {}
    for key, value in fields.items():
        if budget <= 0:
            break
        name = _excerpt(_raw(key), min(256, budget))
        budget -= _stored_size(name)
        raw = _raw(value)
        excerpt = _excerpt(raw, max(0, min(EXCERPT_BYTES, budget)))
        budget -= _stored_size(excerpt)
        if len(excerpt.encode()) < len(raw):
            excerpt = f"{excerpt}…[truncated, {len(raw)} bytes in all]"
        kept[name] = excerpt
    return kept


def build_dead_letter(
    *,
    entry_id: str,
    stream: str,
    fields: Mapping[Any, Any],
    reason: DeadLetterReason,
    error: str,
    failed_at: str,
    max_event_bytes: int,
    payload: bytes | str | None = None,
    payload_field: str | None = None,
    attempts: int = 0,
    event_id: str | None = None,
    tenant_id: str | None = None,
    deliveries: int | None = None,
) -> DeadLetter:
    """The dead letter of one stream entry, holding the event once and bounded in size.

    ``payload`` is the event as read from the entry's field ``payload_field`` (the
    gateway's ``payload``, or a FastStream message's ``__data__``): that field is not
    repeated in ``fields``. A payload that is not UTF-8 text is not a replayable event:
    the letter keeps the field (escaped) instead.
    """
    size = entry_size(fields)
    if size > max_event_bytes:
        return DeadLetter(
            entry_id=entry_id,
            stream=stream,
            fields=_excerpts(fields),
            payload=None,
            reason=reason,
            error=_cut(error, ERROR_CHARS),
            attempts=attempts,
            failed_at=failed_at,
            event_id=event_id,
            tenant_id=tenant_id,
            deliveries=deliveries,
            truncated=True,
            entry_bytes=size,
            entry_sha256=hashlib.sha256(
                b"".join(_raw(key) + _raw(value) for key, value in fields.items())
            ).hexdigest(),
        )
    text = _utf8(payload)
    kept_once = text is not None and payload_field is not None
    return DeadLetter(
        entry_id=entry_id,
        stream=stream,
        fields={
            as_text(key): as_text(value)
            for key, value in fields.items()
            if not (kept_once and as_text(key) == payload_field)
        },
        payload=text,
        payload_field=payload_field if kept_once else None,
        reason=reason,
        error=_cut(error, ERROR_CHARS),
        attempts=attempts,
        failed_at=failed_at,
        event_id=event_id,
        tenant_id=tenant_id,
        deliveries=deliveries,
    )


def _utf8(payload: bytes | str | None) -> str | None:
    if payload is None or isinstance(payload, str):
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
