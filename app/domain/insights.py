"""What the worker produces: insights, the InsightCreated message, dead letters, outcomes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.domain.costs import Lane
from app.domain.events import Severity
from app.domain.keys import Keys

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "Insight",
    "InsightCreated",
    "InsightRecord",
    "Outcome",
    "Risk",
]


class Outcome(StrEnum):
    """Exactly one per event; the label of ``acp_groq_events_consumed_total{result}``."""

    ENRICHED = "enriched"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"
    DEAD_LETTERED = "dead_lettered"


class DeadLetterReason(StrEnum):
    """Why an event was dead-lettered.

    ``invalid``: the entry is not a valid event (no ``payload``, not JSON, a field breaks
    the schema, too large); ``llm_permanent``: the model refused the request in a way
    another attempt cannot fix; ``llm_exhausted``: every attempt failed on a transient
    error; ``conflict``: the ``event_id`` already has another tenant's insight;
    ``max_deliveries``: the entry was delivered ``MAX_DELIVERIES`` times without an outcome;
    ``scrub_failed``: the prompt could not be scrubbed on any of ``MAX_DELIVERIES``
    deliveries, so it was never sent.
    """

    INVALID = "invalid"
    LLM_PERMANENT = "llm_permanent"
    LLM_EXHAUSTED = "llm_exhausted"
    CONFLICT = "conflict"
    MAX_DELIVERIES = "max_deliveries"
    SCRUB_FAILED = "scrub_failed"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


class Insight(BaseModel):
    """The analyst-facing answer of the model, after parsing and sanitizing."""

    model_config = ConfigDict(frozen=True)

    summary: str = Field(
        description="What happened, in one or two sentences.",
        examples=["The billing agent tried to upload an SSH private key with curl."],
    )
    risk: Risk = Field(description="The model's assessment of the risk.", examples=["high"])
    recommendation: str = Field(
        description="What an analyst should do next.",
        examples=["Rotate the key and review the agent's recent shell commands."],
    )


class InsightRecord(BaseModel):
    """The JSON stored at ``acp:groq:insight:{event_id}`` (read by the Insight API)."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Id of the enriched event.", examples=["evt-1"])
    tenant_id: str = Field(description="Tenant of the event.", examples=["acme"])
    agent_id: str = Field(description="Agent of the event.", examples=["billing-agent"])
    severity: Severity = Field(description="Severity of the event.", examples=["high"])
    decision: str = Field(description="The gateway's decision.", examples=["deny"])
    timestamp: float = Field(
        description="The event's timestamp, epoch seconds.", examples=[1795573200.5]
    )
    model: str = Field(
        description="The model that answered (after any fallback).",
        examples=["openai/gpt-oss-120b"],
    )
    insight: Insight = Field(description="The analyst insight.")
    created_at: str = Field(
        description="When the insight was written, RFC 3339.",
        examples=["2026-11-25T02:20:01.204Z"],
    )
    latency_ms: int = Field(
        description="Milliseconds from the worker taking the event to the insight.",
        examples=[812],
    )
    attempts: int = Field(1, description="LLM attempts the insight took.", examples=[1])
    fallback: bool = Field(
        False, description="True when the deep model failed and the fast one answered."
    )
    prompt_tokens: int | None = Field(None, description="Tokens of the prompt.", examples=[312])
    completion_tokens: int | None = Field(None, description="Tokens of the answer.", examples=[96])
    cached_tokens: int | None = Field(
        None,
        description="Prompt tokens the provider served from its prompt cache.",
        examples=[256],
    )
    redactions: int = Field(
        0,
        description="Values masked in the prompt (credentials, personal data): the model saw "
        "placeholders such as [redacted:email] instead.",
        examples=[0],
    )
    lane: Lane = Field(
        Lane.ONLINE,
        description="online: a chat completion when the event was taken; batch: answered "
        "through Groq's Batch API (GROQ_BATCH_SEVERITIES).",
        examples=["online"],
    )


class InsightCreated(BaseModel):
    """Published on ``acp:groq:insights:stream`` when an insight is written."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "evt-2026-11-25-0001",
                    "tenant_id": "acme",
                    "agent_id": "billing-agent",
                    "severity": "high",
                    "model": "openai/gpt-oss-120b",
                    "insight_key": "acp:groq:insight:evt-2026-11-25-0001",
                    "created_at": "2026-11-25T02:20:01.204Z",
                }
            ]
        },
    )

    event_id: str = Field(description="Id of the enriched event.", examples=["evt-1"])
    tenant_id: str = Field(description="Tenant of the event.", examples=["acme"])
    agent_id: str = Field(description="Agent of the event.", examples=["billing-agent"])
    severity: Severity = Field(description="Severity of the event.", examples=["high"])
    model: str = Field(description="Model that answered.", examples=["openai/gpt-oss-20b"])
    insight_key: str = Field(
        description="Redis key holding the insight JSON (TTL 24 h).",
        examples=["acp:groq:insight:evt-1"],
    )
    created_at: str = Field(
        description="When the insight was written, RFC 3339.",
        examples=["2026-11-25T02:20:01.204Z"],
    )

    @classmethod
    def announcing(cls, record: InsightRecord) -> InsightCreated:
        """The announcement of the insight ``record`` (stored under ``insight_key``)."""
        return cls(
            event_id=record.event_id,
            tenant_id=record.tenant_id,
            agent_id=record.agent_id,
            severity=record.severity,
            model=record.model,
            insight_key=Keys.insight(record.event_id),
            created_at=record.created_at,
        )


# The events of the DeadLetter examples: as the gateway wrote one (its entry's payload
# field), and one that misses a required field.
_EXAMPLE_EVENT_PAYLOAD = (
    '{"event_id": "evt-2026-11-25-0003", "tenant_id": "acme", "agent_id": "billing-agent", '
    '"severity": "critical", "decision": "escalate", "timestamp": 1795573260}'
)
_EXAMPLE_INVALID_PAYLOAD = (
    '{"event_id": "evt-2026-11-25-0009", "tenant_id": "acme", "severity": "high", '
    '"decision": "deny", "timestamp": 1795573200.5}'
)
_EXAMPLE_LETTER: dict[str, JsonValue] = {
    "payload_field": "payload",
    "truncated": False,
    "entry_bytes": None,
    "entry_sha256": None,
    "deliveries": None,
}


class DeadLetter(BaseModel):
    """One entry of ``acp:groq:dlq``: enough to understand the failure and to replay it."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "entry_id": "1795573200000-0",
                    "stream": "acp:groq_queue",
                    "fields": {},
                    "payload": _EXAMPLE_INVALID_PAYLOAD,
                    "reason": "invalid",
                    "error": "agent_id: Field required",
                    "attempts": 0,
                    "failed_at": "2026-11-25T02:20:01.204Z",
                    "event_id": "evt-2026-11-25-0009",
                    "tenant_id": "acme",
                    **_EXAMPLE_LETTER,
                },
                {
                    "entry_id": "1795573260000-0",
                    "stream": "acp:groq_queue",
                    "fields": {},
                    "payload": _EXAMPLE_EVENT_PAYLOAD,
                    "reason": "llm_exhausted",
                    "error": "timeout: the model did not answer in time",
                    "attempts": 3,
                    "failed_at": "2026-11-25T02:21:31.017Z",
                    "event_id": "evt-2026-11-25-0003",
                    "tenant_id": "acme",
                    **_EXAMPLE_LETTER,
                },
                {
                    "entry_id": "1795573320000-0",
                    "stream": "acp:groq_queue",
                    "fields": {},
                    "payload": _EXAMPLE_EVENT_PAYLOAD,
                    "reason": "max_deliveries",
                    "error": "delivered 6 times (MAX_DELIVERIES=5): it kept crashing or timing "
                    "out its workers",
                    "attempts": 0,
                    "failed_at": "2026-11-25T02:32:00.412Z",
                    "event_id": None,
                    "tenant_id": None,
                    **_EXAMPLE_LETTER,
                    "deliveries": 6,
                },
                {
                    "entry_id": "1795573380000-0",
                    "stream": "acp:groq_queue",
                    "fields": {
                        "payload": '{"event_id": "evt-2026-11-25-0011", "findings": ["aaaa'
                        "…[truncated 1995911 bytes]"
                    },
                    "payload": None,
                    "reason": "invalid",
                    "error": "entry is larger than MAX_EVENT_BYTES (2000007 > 262144 bytes)",
                    "attempts": 0,
                    "failed_at": "2026-11-25T02:33:10.007Z",
                    "event_id": None,
                    "tenant_id": None,
                    "payload_field": None,
                    "truncated": True,
                    "entry_bytes": 2_000_007,
                    "entry_sha256": "3b5d5c3712955042212316173ccf37be"
                    "800e11e1b6cf5c10ac1c1b0e2f95dd0c",
                    "deliveries": None,
                },
            ]
        },
    )

    entry_id: str = Field(
        description="Stream entry id the event had.", examples=["1795573200000-0"]
    )
    stream: str = Field(description="Stream it was read from.", examples=["acp:groq_queue"])
    fields: dict[str, str] = Field(
        description="The entry's fields as received (bytes that are not UTF-8 are escaped), "
        "but the one `payload` was read from, named in `payload_field`: the letter holds the "
        "event once. An entry over MAX_EVENT_BYTES keeps only an excerpt of its fields "
        "(`truncated`).",
        examples=[{}, {"source": "gateway-eu-1"}],
    )
    payload: str | None = Field(
        None,
        description="The event JSON as received, which replay puts back on the stream (null "
        "when the entry had no readable payload, or was over MAX_EVENT_BYTES).",
        examples=['{"event_id": "evt-2026-11-25-0009", "tenant_id": "acme"}'],
    )
    payload_field: str | None = Field(
        None,
        description="The entry field `payload` was read from: `payload` (the gateway's "
        "format) or `__data__` (a FastStream message's body); left out of `fields`.",
        examples=["payload"],
    )
    truncated: bool = Field(
        False,
        description="True when the entry was over MAX_EVENT_BYTES: `fields` holds excerpts "
        "(each value cut to 4,096 bytes, 16,384 in all; later fields left out), "
        "`payload` is null, and `entry_bytes` and `entry_sha256` identify the whole.",
        examples=[False, True],
    )
    entry_bytes: int | None = Field(
        None,
        description="With `truncated`: the entry's size, its field names and values in bytes.",
        examples=[2_000_773],
    )
    entry_sha256: str | None = Field(
        None,
        description="With `truncated`: SHA-256 (hex) of the entry's field names and values "
        "concatenated in the order the stream returns them.",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    reason: DeadLetterReason = Field(
        description="Why it was dead-lettered.", examples=["invalid", "llm_exhausted"]
    )
    error: str = Field(
        description="Human-readable cause (for `invalid`: each offending field and why).",
        examples=["agent_id: Field required", "timeout: the model did not answer in time"],
    )
    attempts: int = Field(description="LLM attempts made (0 when none).", examples=[3])
    failed_at: str = Field(description="When, RFC 3339.", examples=["2026-11-25T02:20:01Z"])
    event_id: str | None = Field(
        None,
        description="The event id, when it was readable (null otherwise).",
        examples=["evt-2026-11-25-0009"],
    )
    tenant_id: str | None = Field(
        None,
        description="The tenant id, when it was readable (null otherwise).",
        examples=["acme"],
    )
    deliveries: int | None = Field(
        None,
        description="Deliveries of the entry, for `max_deliveries` (null otherwise).",
        examples=[6],
    )

    def summary(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "reason": self.reason.value, "error": self.error}
