"""Scrubbing text of credentials and of echoes of an event's raw fields.

Used on model output before it is stored or published, and by the log redaction
processor. The patterns aim at shapes real credentials have (provider key prefixes,
JWTs, PEM blocks, ``password=``-style pairs); harmless prose must pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from app.domain.events import AuditEvent
from app.domain.insights import Insight
from app.domain.prompt import prompt_fields

__all__ = [
    "REDACTED",
    "echo_candidates",
    "redact_secrets",
    "sanitize_insight",
    "sanitize_text",
]

REDACTED = "[REDACTED]"

# Shapes real credentials have, each with the literal text it cannot do without. A
# pattern runs only when one of its markers is in the text (a substring test in C):
# most text (ids, model prose) holds none, and Python's regex engine is slow on long
# alternations. Markers of the case-insensitive patterns are lower-case.
_SECRET_SHAPES: tuple[tuple[tuple[str, ...], bool, re.Pattern[str]], ...] = (
    # PEM private key blocks, also when the model cut the block short.
    (
        ("PRIVATE KEY",),
        False,
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
    ),
    (("gsk_",), False, re.compile(r"\bgsk_[A-Za-z0-9]{20,}")),  # Groq
    (  # OpenAI, Anthropic
        ("sk-",),
        False,
        re.compile(r"\bsk-(?:proj-|ant-|live-|test-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ),
    (  # AWS access key id
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA"),
        False,
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    ),
    (  # GitHub tokens
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        False,
        re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b"),
    ),
    (("github_pat_",), False, re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    (("glpat-",), False, re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),  # GitLab
    (("xox",), False, re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),  # Slack tokens
    (
        ("hooks.slack.com",),
        False,
        re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    ),
    (("AIza",), False, re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),  # Google API key
    (("k_live_", "k_test_"), False, re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    (("npm_",), False, re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    (  # JWT
        ("eyJ",),
        False,
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ),
    (("bearer",), True, re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}")),
    (("basic",), True, re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/]{16,}={0,2}")),
)
# The key words of _SECRET_PAIR (lower-case): without one of them it cannot match.
_PAIR_MARKERS = ("pass", "pwd", "secret", "key", "token")

# key=value / key: value pairs whose value is a secret; the key is kept for context.
# The key may carry a prefix (``DB_PASSWORD``, ``aws_secret_access_key``, ``--password``,
# ``spring.datasource.password``); a value already redacted is taken whole. A key starts
# only after a character that cannot be part of one, which keeps the scan linear.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?<![A-Za-z0-9_.-])
    (
        [_.-]*(?:[a-z0-9]+[_.-])*
        (
            password | passwd | passphrase | pwd | pass | secret | client[_-]?secret |
            api[_-]?key | access[_-]?key(?:[_-]?id)? | secret[_-]?access[_-]?key |
            private[_-]?key | auth[_-]?token | access[_-]?token | refresh[_-]?token | token
        )
    )\b
    (\s*["']?\s*[:=]\s*)
    (\[REDACTED\]|"[^"\n]*"|'[^'\n]*'|[^\s,;"'}\]]+)
    """
)
# Words that are also ordinary English: after them, ``key: word`` in a sentence ("first
# pass: the agent ...", "Token: the model ...") is prose, not a credential.
_WEAK_KEYS = frozenset({"pass", "pwd", "secret", "token"})
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]{0,11}")


def _redact_pair(match: re.Match[str]) -> str:
    key, base, separator, value = match.group(1, 2, 3, 4)
    prose = (
        base.lower() in _WEAK_KEYS
        and "=" not in separator
        and not separator.rstrip().endswith(("'", '"'))
        and _PLAIN_WORD.fullmatch(value) is not None
    )
    return match.group(0) if prose else f"{key}{separator}{REDACTED}"


# user:password@host in URLs (connection strings): the password goes. The scheme starts
# only where a run of scheme characters starts, so a long run is scanned once, not
# once per word boundary in it (which was quadratic).
_URL_PASSWORD = re.compile(
    r"((?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)([^\s@/]+)(@)"
)

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
    """``text`` with everything that looks like a credential replaced by ``[REDACTED]``."""
    lower = text.lower()
    for markers, folded, pattern in _SECRET_SHAPES:
        if any(marker in (lower if folded else text) for marker in markers):
            text = pattern.sub(REDACTED, text)
            lower = text.lower()
    if any(marker in lower for marker in _PAIR_MARKERS):
        text = _SECRET_PAIR.sub(_redact_pair, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)
    return text


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


def sanitize_text(text: str, *, echoes: Iterable[str] = (), limit: int | None = None) -> str:
    """Credentials and echoed raw values removed, then cut to ``limit`` characters."""
    for value in echoes:
        if value in text:
            text = text.replace(value, REDACTED)
    text = redact_secrets(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…" if limit > 0 else ""
    return text


def sanitize_insight(insight: Insight, *, echoes: Iterable[str], max_chars: int) -> Insight:
    """The insight safe to store: no credentials, no echoes, at most ``max_chars`` in all."""
    echo_list = list(echoes)
    summary = sanitize_text(insight.summary, echoes=echo_list, limit=max_chars)
    recommendation = sanitize_text(
        insight.recommendation, echoes=echo_list, limit=max(max_chars - len(summary), 0)
    )
    return insight.model_copy(update={"summary": summary, "recommendation": recommendation})
