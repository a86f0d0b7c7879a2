"""Scrubbing model output of credentials, personal data and echoes of an event's raw fields.

Used on model output before it is stored or published, and (``redact_secrets``) by the
log redaction processor and error messages. The rules are ``app.domain.redaction``'s, the
same the prompt scrubber applies to what goes to the model: one table, two directions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from app.domain.events import AuditEvent
from app.domain.insights import Insight
from app.domain.prompt import prompt_fields
from app.domain.redaction import redact

__all__ = [
    "REDACTED",
    "echo_candidates",
    "redact_secrets",
    "sanitize_insight",
    "sanitize_text",
]

# What replaces an echo of a raw field, or a known secret (the API key) in a log line.
# Credentials and personal data get typed placeholders (``app.domain.redaction``).
REDACTED = "[REDACTED]"

_MIN_ECHO_LENGTH = 8
_PROMPT_KEYS = frozenset(
    {
        "event_id",
        "tenant_id",
        "agent_id",
        "severity",
        "decision",
        "timestamp",
        "agent_name",
        "tool_name",
        "findings",
    }
)


def redact_secrets(text: str) -> str:
    """``text`` with everything shaped like a credential replaced by a typed placeholder.

    The credential rules of ``app.domain.redaction`` (the ones the prompt scrubber uses);
    for log lines and error messages, where personal data is not looked for.
    """
    return redact(text, pii=False)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def echo_candidates(event: AuditEvent) -> list[str]:
    """Values of the event's raw fields (never in the prompt) that output must not echo.

    Every string of a field outside the prompt allow-list, and of ``metadata`` outside
    ``flags``, at least 8 characters long (shorter ones would strike ordinary words).
    A value the prompt itself carries (a raw field repeating the tool name, say) is no
    echo: the model was given it. Longest first, so a value that contains another is
    removed whole.
    """
    raw: dict[str, Any] = dict(event.model_extra or {})
    raw["metadata"] = {key: value for key, value in event.metadata.items() if key != "flags"}
    values: set[str] = set()
    for key, value in raw.items():
        if key in _PROMPT_KEYS:
            continue
        for text in _strings(value):
            values.update(part for part in (text, text.strip()) if len(part) >= _MIN_ECHO_LENGTH)
    given = [
        *_strings(prompt_fields(event)),
        event.event_id,
        event.tenant_id,
        event.agent_id,
    ]
    echoes = (value for value in values if not any(value in text for text in given))
    return sorted(echoes, key=lambda value: (-len(value), value))


def sanitize_text(
    text: str, *, echoes: Iterable[str] = (), limit: int | None = None, pii: bool = True
) -> str:
    """Echoed raw values, credentials and (if ``pii``) personal data removed, then cut.

    The same rules as the prompt scrubber: a placeholder the model repeats
    (``[redacted:email]``) is kept as it is.
    """
    for value in echoes:
        if value in text:
            text = text.replace(value, REDACTED)
    text = redact(text, pii=pii)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…" if limit > 0 else ""
    return text


def sanitize_insight(
    insight: Insight, *, echoes: Iterable[str], max_chars: int, pii: bool = True
) -> Insight:
    """The insight safe to store: no credentials, no echoes, at most ``max_chars`` in all.

    ``pii``: personal data is removed too (``PROMPT_REDACT_PII``: what the model was not
    shown is not stored from its answer either).
    """
    echo_list = list(echoes)
    summary = sanitize_text(insight.summary, echoes=echo_list, limit=max_chars, pii=pii)
    recommendation = sanitize_text(
        insight.recommendation,
        echoes=echo_list,
        limit=max(max_chars - len(summary), 0),
        pii=pii,
    )
    return insight.model_copy(update={"summary": summary, "recommendation": recommendation})
