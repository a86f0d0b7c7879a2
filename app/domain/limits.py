"""Provider rate limits as data and arithmetic: what a call costs, what the headers say, GCRA.

Groq meters each organization per model with token buckets: requests and tokens per
minute and per day. A bucket holds ``limit`` units and refills continuously over its
period, and every answer says where the caller stands::

    x-ratelimit-limit-requests: 14400      x-ratelimit-limit-tokens: 250000
    x-ratelimit-remaining-requests: 14399  x-ratelimit-remaining-tokens: 249840
    x-ratelimit-reset-requests: 6s         x-ratelimit-reset-tokens: 38ms

(``-requests`` is the day's count, ``-tokens`` the minute's; a reset is the time until
the bucket is full again, a Go duration). A 429 adds ``retry-after`` in seconds.

The worker's limiter is GCRA (the generic cell rate algorithm), which is that same token
bucket stored as one number per bucket: the *theoretical arrival time* ``tat``, the
moment the bucket would be full again. With ``T = period / limit`` seconds per unit:

* a call costing ``c`` units fits when ``max(tat, now) + c*T - now <= period``, and then
  ``tat`` becomes ``max(tat, now) + c*T``; otherwise it waits
  ``max(tat, now) + c*T - period - now`` seconds;
* the units available now are ``(period - (max(tat, now) - now)) / T``;
* a reset header of ``d`` seconds means "full again at ``now + d``": ``tat`` is raised to
  at least ``now + d``, which is how one answer tightens every process's view at once.

The Redis script in ``app/adapters/rate_limit.py`` does this same arithmetic atomically
for every worker process; this module is its reference (and the in-memory limiter's).
Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "KINDS",
    "PERIODS",
    "GcraVerdict",
    "LimitTable",
    "ModelLimits",
    "RateLimitLesson",
    "allowance",
    "allowances",
    "effective_limits",
    "estimate_prompt_tokens",
    "estimate_request_tokens",
    "gcra_acquire",
    "gcra_settle",
    "lesson_from_headers",
    "lesson_from_retry_after",
    "limit_bucket",
    "parse_go_duration",
]

# The buckets a model can have, in the order the Redis script takes them.
KINDS: tuple[str, ...] = ("rpm", "tpm", "rpd", "tpd")
PERIODS: Mapping[str, float] = {"rpm": 60.0, "tpm": 60.0, "rpd": 86_400.0, "tpd": 86_400.0}
_TOKEN_KINDS = frozenset({"tpm", "tpd"})

# A 429 without retry-after still stops every process for a moment.
DEFAULT_RATE_LIMIT_BLOCK_SECONDS = 1.0
_EPSILON = 1e-9


# -- configuration --------------------------------------------------------------------


class ModelLimits(BaseModel):
    """The limits of one model: requests and tokens per minute and per day (0: none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int = Field(0, ge=0, le=100_000_000, description="Requests per minute.")
    tpm: int = Field(0, ge=0, le=1_000_000_000, description="Tokens per minute.")
    rpd: int = Field(0, ge=0, le=1_000_000_000, description="Requests per day.")
    tpd: int = Field(0, ge=0, le=100_000_000_000, description="Tokens per day.")

    def limit(self, kind: str) -> int:
        return int(getattr(self, kind))

    @property
    def any(self) -> bool:
        return any(self.limit(kind) for kind in KINDS)


@dataclass(frozen=True, slots=True)
class LimitTable:
    """The deployment's limits: ``default`` for every model, ``per_model`` field by field.

    A per-model entry replaces only the fields it sets: ``{"tpm": 8000}`` keeps the
    default requests per minute.
    """

    default: ModelLimits = field(default_factory=ModelLimits)
    per_model: Mapping[str, ModelLimits] = field(default_factory=dict)

    def for_model(self, model: str) -> ModelLimits:
        """The limits of ``model``, or of a tier's bucket of it (``limit_bucket``): an
        entry of its own, else flex's are ten times the model's (Groq's flex tier)."""
        entry = self.per_model.get(model)
        if entry is None:
            name, _, tier = model.rpartition("@")
            if name and tier == "flex":
                base = self.for_model(name)
                return base.model_copy(
                    update={kind: base.limit(kind) * FLEX_LIMIT_FACTOR for kind in KINDS}
                )
            if name and tier == "performance":
                return self.for_model(name)
            return self.default
        update = {name: getattr(entry, name) for name in entry.model_fields_set}
        return self.default.model_copy(update=update)

    @property
    def any(self) -> bool:
        return self.default.any or any(entry.any for entry in self.per_model.values())


# Groq: flex processing has "10x higher rate limits compared to on-demand processing".
FLEX_LIMIT_FACTOR = 10


def limit_bucket(model: str, service_tier: str | None) -> str:
    """The limits a request counts against: the model's (on-demand's; ``auto`` spends them
    first), or those of the flex or performance tier, which are their own
    (``<model>@flex``, ``<model>@performance``: an entry of GROQ_MODEL_LIMITS may name them)."""
    if service_tier in ("flex", "performance"):
        return f"{model}@{service_tier}"
    return model


# -- what a call costs ----------------------------------------------------------------

# Chat-template tokens around each message and around the conversation (OpenAI's
# published accounting; Llama and gpt-oss templates cost about the same).
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_CONVERSATION = 3
# One token per 3 UTF-8 bytes over-counts English (about 4 bytes a token) and JSON, and
# matches scripts that take 3 bytes a character: an estimate that errs high waits a
# little early rather than causing a 429. The answer's ``usage`` corrects it.
_BYTES_PER_TOKEN = 3


def estimate_prompt_tokens(*messages: str) -> int:
    """An upper estimate of the prompt tokens of these messages, from their size alone."""
    content = sum(math.ceil(len(text.encode("utf-8")) / _BYTES_PER_TOKEN) for text in messages)
    return content + _TOKENS_PER_MESSAGE * len(messages) + _TOKENS_PER_CONVERSATION


def estimate_request_tokens(system: str, user: str, max_completion_tokens: int) -> int:
    """Tokens to reserve before a call: the prompt's estimate plus the whole output room.

    Providers meter the output a call *may* produce when they admit it, so the full
    ``max_completion_tokens`` is reserved; what the answer did not use is given back.
    """
    return estimate_prompt_tokens(system, user) + max(0, max_completion_tokens)


# -- what the headers say -------------------------------------------------------------

_GO_UNITS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,  # Go prints the micro sign
    "μs": 1e-6,  # and accepts the Greek mu
    "ns": 1e-9,
}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str | None) -> float | None:
    """Seconds in a Go duration (``2m59.56s``, ``7.66s``, ``38ms``, ``1h0m0s``), else None.

    A bare number is taken as seconds (as ``retry-after`` writes it). Negative or
    malformed values are None: a header that cannot be read teaches nothing.
    """
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    if value.startswith("+"):
        value = value[1:]
    position, total = 0, 0.0
    while position < len(value):
        match = _GO_PART.match(value, position)
        if match is None:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    return total if position and math.isfinite(total) else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(float(value.strip()))
    except ValueError:
        return None
    return number if number >= 0 else None


@dataclass(frozen=True, slots=True)
class RateLimitLesson:
    """What one answer taught about a model's limits, to apply to the shared limiter.

    ``block_for``: no call may start for this long (a 429's retry-after, or a request
    count that reached 0). ``tokens_full_in``: the token bucket is full again only this
    far from now (raises ``tat``). ``tokens_limit``: the provider's tokens per minute.
    """

    block_for: float = 0.0
    tokens_full_in: float | None = None
    tokens_limit: int | None = None

    @property
    def empty(self) -> bool:
        return self.block_for <= 0 and self.tokens_full_in is None and self.tokens_limit is None


def lesson_from_headers(headers: Mapping[str, str]) -> RateLimitLesson:
    """The lesson in an answer's ``x-ratelimit-*`` headers (names lower-cased).

    Requests: Groq reports its *daily* count, so the only safe reading is "none left
    until the reset" when ``remaining-requests`` is 0. Tokens: the per-minute bucket's
    reset (or, without one, the share already used) gives its ``tat``.
    """
    block_for = 0.0
    if _int_header(headers, "x-ratelimit-remaining-requests") == 0:
        block_for = parse_go_duration(headers.get("x-ratelimit-reset-requests")) or 0.0
    tokens_limit = _int_header(headers, "x-ratelimit-limit-tokens") or None
    full_in = parse_go_duration(headers.get("x-ratelimit-reset-tokens"))
    if full_in is None and tokens_limit:
        remaining = _int_header(headers, "x-ratelimit-remaining-tokens")
        if remaining is not None:
            used = max(0, tokens_limit - remaining)
            full_in = used * PERIODS["tpm"] / tokens_limit
    return RateLimitLesson(block_for=block_for, tokens_full_in=full_in, tokens_limit=tokens_limit)


def lesson_from_retry_after(
    retry_after: float | None, headers: Mapping[str, str] | None = None
) -> RateLimitLesson:
    """A 429: nobody calls the model before its retry-after (1 s when it gave none).

    The 429's own ``x-ratelimit-*`` headers, when it has them, teach what an answer's do.
    """
    if retry_after is None or retry_after <= 0:
        retry_after = DEFAULT_RATE_LIMIT_BLOCK_SECONDS
    if not headers:
        return RateLimitLesson(block_for=retry_after)
    taught = lesson_from_headers(headers)
    return RateLimitLesson(
        block_for=max(retry_after, taught.block_for),
        tokens_full_in=taught.tokens_full_in,
        tokens_limit=taught.tokens_limit,
    )


# -- GCRA -----------------------------------------------------------------------------


def effective_limits(limits: ModelLimits, learned_tpm: int | None) -> dict[str, int]:
    """The limit of each bucket: configured, tightened by a tokens-per-minute learned."""
    result = {kind: limits.limit(kind) for kind in KINDS}
    if learned_tpm:
        result["tpm"] = min(result["tpm"], learned_tpm) if result["tpm"] else learned_tpm
    return result


def allowance(tat: float, now: float, limit: int, period: float) -> float:
    """Units a bucket can give right now (0 when empty)."""
    if limit <= 0:
        return math.inf
    used_for = max(tat, now) - now
    return max(0.0, (period - used_for) * limit / period)


@dataclass(frozen=True, slots=True)
class GcraVerdict:
    """The answer to "may a call go now?": the new ``tats`` if yes, the wait if not."""

    acquired: bool
    wait: float
    tats: dict[str, float]
    allowance: dict[str, float]
    blocked_for: float


def gcra_acquire(
    tats: Mapping[str, float],
    *,
    now: float,
    tokens: int,
    limits: Mapping[str, int],
    blocked_until: float = 0.0,
) -> GcraVerdict:
    """One call of ``tokens`` against every limited bucket: all fit, or nothing changes.

    A call bigger than a whole bucket is charged the whole bucket (it goes when the
    bucket is full; the provider decides, typically with a 413).
    """
    blocked_for = max(0.0, blocked_until - now)
    wait = blocked_for
    new_tats = dict(tats)
    for kind in KINDS:
        limit = limits.get(kind, 0)
        if limit <= 0:
            continue
        period = PERIODS[kind]
        cost = min(float(tokens if kind in _TOKEN_KINDS else 1), float(limit))
        after = max(tats.get(kind, 0.0), now) + cost * period / limit
        wait = max(wait, after - period - now)
        new_tats[kind] = after
    acquired = wait <= _EPSILON
    final = new_tats if acquired else dict(tats)
    return GcraVerdict(
        acquired=acquired,
        wait=0.0 if acquired else wait,
        tats=final,
        allowance=allowances(final, now, limits),
        blocked_for=blocked_for,
    )


def gcra_settle(
    tats: Mapping[str, float],
    *,
    now: float,
    token_delta: int,
    limits: Mapping[str, int],
    lesson: RateLimitLesson | None = None,
) -> dict[str, float]:
    """The token buckets after a call: its estimate corrected, then the headers' lesson.

    ``token_delta`` is what the call really cost minus what was reserved: positive
    charges more, negative gives back (never past a full bucket).
    """
    result = dict(tats)
    for kind in ("tpm", "tpd"):
        limit = limits.get(kind, 0)
        if limit <= 0 or token_delta == 0:
            continue
        shift = token_delta * PERIODS[kind] / limit
        tat = result.get(kind, 0.0)
        result[kind] = max(tat, now) + shift if shift > 0 else max(tat + shift, now)
    if lesson is not None and lesson.tokens_full_in is not None:
        result["tpm"] = max(result.get("tpm", 0.0), now + lesson.tokens_full_in)
    return result


def allowances(
    tats: Mapping[str, float], now: float, limits: Mapping[str, int]
) -> dict[str, float]:
    return {
        kind: allowance(tats.get(kind, 0.0), now, limits[kind], PERIODS[kind])
        for kind in KINDS
        if limits.get(kind, 0) > 0
    }
