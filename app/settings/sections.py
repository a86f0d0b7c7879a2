"""The settings, by concern: each section a class of its own, with its fields and checks.

``app.settings.Settings`` is all of them at once (one object, flat environment names as
in the contract). The sections come in the order of the README's tables: what an operator
sets on day one first, then tuning, limits, the batch lane, retention and cluster mode.
"""

from __future__ import annotations

import os
import re
import socket
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AnyUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from app.domain.batch import MAX_FILE_LINES
from app.domain.costs import ModelPrice
from app.domain.events import Severity
from app.domain.keys import DLQ_MAX_ENTRIES
from app.domain.limits import LimitTable, ModelLimits
from app.domain.prompt import DEFAULT_MAX_PROMPT_CHARS, MIN_MAX_PROMPT_CHARS
from app.domain.routing import ServiceTier, parse_service_tiers
from app.domain.scheduling import EventOrder

__all__ = [
    "BatchLaneSettings",
    "ClusterSettings",
    "Everyday",
    "LLMProvider",
    "LimitSettings",
    "LogFormat",
    "LogSettings",
    "ModelTuning",
    "RedisMode",
    "RetentionMode",
    "RetentionSettings",
    "SchedulingSettings",
    "StreamTuning",
]

_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the event schema's rule


class LLMProvider(StrEnum):
    GROQ = "groq"
    OFFLINE = "offline"
    OPENAI_COMPATIBLE = "openai-compatible"  # Ollama, vLLM, llama.cpp: /v1/chat/completions


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"
    AUTO = "auto"  # console on a TTY, JSON otherwise


class RedisMode(StrEnum):
    STANDALONE = "standalone"  # one Redis (or a primary behind Sentinel's address)
    CLUSTER = "cluster"  # a Redis Cluster; REDIS_URL names one seed node


class RetentionMode(StrEnum):
    ACKED = "acked"  # trim what every group of the stream has acknowledged
    OFF = "off"  # never trim the inbound stream


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    return value


def _empty_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


class Everyday(BaseSettings):
    """What an operator sets on day one: where the events are, which model answers them,
    how many at once, each tenant's budget, where metrics are served."""

    redis_url: AnyUrl = Field(
        AnyUrl("redis://localhost:6379/0"),
        description="Redis holding the inbound stream and the insight keys.",
    )
    llm_provider: LLMProvider = Field(
        LLMProvider.GROQ,
        description="groq, openai-compatible (Ollama, vLLM, llama.cpp) or offline (no model).",
    )
    groq_api_key: SecretStr | None = Field(
        None, description="Groq API key (secret; required with LLM_PROVIDER=groq)."
    )
    groq_model_fast: str = Field(
        "openai/gpt-oss-20b",
        min_length=1,
        max_length=200,
        description="The model of the severities not in DEEP_SEVERITIES.",
    )
    groq_model_deep: str = Field(
        "openai/gpt-oss-120b",
        min_length=1,
        max_length=200,
        description="The model of DEEP_SEVERITIES.",
    )
    worker_concurrency: int = Field(32, ge=1, le=4096, description="Events in flight.")
    insight_budget_per_hour_per_tenant: int = Field(
        1000, ge=0, le=100_000_000, description="Enrichments per tenant per hour."
    )
    metrics_port: int = Field(
        9102, ge=0, le=65_535, description="/metrics and health; 0 disables the HTTP server."
    )

    @field_validator("groq_api_key", mode="before")
    @classmethod
    def _no_empty_key(cls, value: object) -> object:
        return _empty_is_none(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: AnyUrl) -> AnyUrl:
        if value.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class StreamTuning(BaseSettings):
    """The inbound stream, the consumer group and this consumer: reading, claiming, stopping."""

    insight_stream: str = Field("acp:groq_queue", description="Inbound event stream.")
    insight_group: str = Field("acp_insights_consumer_group", description="Consumer group.")
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description="Consumer name in the group; unique per process (default host-pid); "
        "'{pid}' in it is replaced by the process id.",
    )
    read_batch_size: int = Field(
        0,
        ge=0,
        le=10_000,
        description="XREADGROUP COUNT: entries read ahead per call (0: WORKER_CONCURRENCY).",
    )
    read_block_ms: int = Field(1000, ge=1, le=60_000, description="XREADGROUP BLOCK in ms.")
    claim_idle_seconds: float = Field(
        60.0, gt=0, le=86_400, description="Entries pending longer than this are claimed."
    )
    consumer_prune_idle_seconds: float = Field(
        900.0,
        ge=0,
        le=30 * 86_400,
        description="Consumers idle this long that hold nothing are removed from the group "
        "(a process that died without leaving); 0 keeps them.",
    )
    max_deliveries: int = Field(5, ge=1, le=1000, description="Deliveries before poison.")
    shutdown_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="How long SIGTERM waits for in-flight events."
    )

    @field_validator("worker_id")
    @classmethod
    def _consumer_name(cls, value: str) -> str:
        # "{pid}" keeps names unique when one WORKER_ID is shared by the processes of
        # `faststream run --workers N` (e.g. WORKER_ID=$(POD_NAME)-{pid}).
        value = value.replace("{pid}", str(os.getpid()))
        if not _CONSUMER_NAME.match(value):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
        return value

    @field_validator("insight_stream", "insight_group")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not _KEY_PART.match(value):
            raise ValueError("must be a plain Redis key name (letters, digits, . _ : -)")
        return value


class SchedulingSettings(BaseSettings):
    """Which waiting event goes first (severity, then a fair share between tenants), and
    which of Groq's service tiers each severity is sent on."""

    event_order: EventOrder = Field(
        EventOrder.PRIORITY,
        description="priority: severity first, then a fair share between tenants, across "
        "every process; fifo: the stream's order.",
    )
    tenant_weights: dict[str, float] = Field(
        default_factory=dict,
        description="JSON, tenant -> weight (default 1 each): a tenant's share of model "
        'calls among the tenants with events of one severity waiting, e.g. {"acme": 2}.',
    )

    groq_service_tiers: Annotated[dict[Severity, ServiceTier], NoDecode] = Field(
        default_factory=dict,
        description="severity=tier, comma-separated (on_demand, flex, auto, performance), "
        "e.g. critical=on_demand,low=flex; empty: no service_tier sent. A call flex refuses "
        "(498) goes again on on_demand for critical and high, waits and retries for others.",
    )

    @field_validator("groq_service_tiers", mode="before")
    @classmethod
    def _parse_tiers(cls, value: object) -> object:
        return parse_service_tiers(value) if isinstance(value, str) else value

    @field_validator("tenant_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for tenant, weight in value.items():
            if not _TENANT_ID.match(tenant):
                raise ValueError(f"{tenant[:64]!r} is not a tenant id")
            if not 0.001 <= weight <= 1000:
                raise ValueError(f"the weight of {tenant!r} must be between 0.001 and 1000")
        return value


class ModelTuning(BaseSettings):
    """Reaching the model: endpoints, routing, the request, retries and the breaker."""

    groq_base_url: AnyUrl | None = Field(None, description="Groq API base URL override.")
    llm_base_url: AnyUrl | None = Field(
        None,
        description="LLM_PROVIDER=openai-compatible: the server's root URL (a trailing /v1 "
        "is accepted); calls go to <root>/v1/chat/completions.",
    )
    llm_api_key: SecretStr | None = Field(
        None, description="Bearer key for an OpenAI-compatible server (secret; optional)."
    )
    allowed_models: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated models GROQ_MODEL_FAST/DEEP may name (empty: any).",
    )
    deep_severities: Annotated[frozenset[Severity], NoDecode] = Field(
        frozenset({Severity.HIGH, Severity.CRITICAL}),
        description="Severities served by GROQ_MODEL_DEEP (comma-separated).",
    )
    groq_max_attempts: int = Field(3, ge=1, le=20, description="Attempts per event in total.")
    groq_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Timeout of one model call."
    )
    groq_backoff_base_seconds: float = Field(
        0.5, ge=0, le=60, description="First backoff; doubles per attempt, with jitter."
    )
    groq_backoff_max_seconds: float = Field(8.0, ge=0, le=600, description="Backoff cap.")
    groq_retry_after_max_seconds: float = Field(
        30.0, ge=0, le=3600, description="Cap on a 429's retry-after before the next attempt."
    )
    groq_max_completion_tokens: int = Field(
        1024, ge=16, le=65_536, description="Room for reasoning models to think and answer."
    )
    groq_reasoning_effort: str | None = Field(
        "low", description="reasoning_effort for reasoning models; empty to omit."
    )
    breaker_failure_threshold: int = Field(
        5, ge=1, le=10_000, description="Failed model calls in a row that open the breaker."
    )
    breaker_cooldown_seconds: float = Field(
        15.0, gt=0, le=3600, description="How long the breaker stays open before a probe."
    )

    @field_validator(
        "groq_base_url", "groq_reasoning_effort", "llm_base_url", "llm_api_key", mode="before"
    )
    @classmethod
    def _no_empty_values(cls, value: object) -> object:
        return _empty_is_none(value)

    @field_validator("deep_severities", mode="before")
    @classmethod
    def _parse_deep_severities(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        if isinstance(value, str):  # model names are case-sensitive on most servers
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("groq_reasoning_effort")
    @classmethod
    def _effort(cls, value: str | None) -> str | None:
        if value is not None and value not in {"low", "medium", "high"}:
            raise ValueError("must be low, medium or high (or empty to omit it)")
        return value

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Self:
        if self.groq_backoff_max_seconds < self.groq_backoff_base_seconds:
            raise ValueError("GROQ_BACKOFF_MAX_SECONDS must be >= GROQ_BACKOFF_BASE_SECONDS")
        return self


class LimitSettings(BaseSettings):
    """What bounds the provider's calls, one event, its prompt, its answer and the DLQ."""

    # Rate limits per model, shared by every process through Redis (0: no limit). Off by
    # default: the right numbers are the organization's plan, shared with whatever else
    # uses its key; see docs/rate-limits.md to size them.
    groq_rpm_limit: int = Field(0, ge=0, le=100_000_000, description="Requests/minute/model.")
    groq_tpm_limit: int = Field(0, ge=0, le=1_000_000_000, description="Tokens/minute/model.")
    groq_model_limits: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description='Per-model limits, JSON: {"openai/gpt-oss-120b": {"rpm": 30, "tpm": 8000}}'
        " (keys rpm, tpm, rpd, tpd; unset keys take GROQ_RPM_LIMIT/GROQ_TPM_LIMIT). A "
        "model's flex tier has limits of its own, ten times its on-demand ones unless "
        'an entry names it ("openai/gpt-oss-120b@flex").',
    )
    groq_limiter_pause_threshold_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="A limiter wait longer than this is a pause (logged, in readiness).",
    )
    max_event_bytes: int = Field(
        262_144, ge=256, le=64 * 1024 * 1024, description="Larger entries are invalid."
    )
    max_prompt_chars: int = Field(
        DEFAULT_MAX_PROMPT_CHARS,
        ge=MIN_MAX_PROMPT_CHARS,
        le=1_000_000,
        description="Ceiling of the prompt's user message, in characters; longer events "
        "are enriched from a prompt that leaves out their last findings.",
    )
    max_output_chars: int = Field(
        4000, ge=64, le=1_000_000, description="Cap on the stored insight text."
    )
    prompt_redact_pii: bool = Field(
        True,
        description="Mask personal data (emails, card numbers, IBANs, phone numbers) in "
        "prompts and stored insights; credentials are masked always.",
    )
    dlq_max_entries: int = Field(
        DLQ_MAX_ENTRIES,
        ge=1,
        le=100_000_000,
        description="Dead letters kept in acp:groq:dlq; past it the oldest are dropped "
        "(counted in acp_groq_dlq_dropped_total).",
    )

    @property
    def limit_table(self) -> LimitTable:
        """The rate limits of every model (GROQ_RPM_LIMIT, GROQ_TPM_LIMIT, GROQ_MODEL_LIMITS)."""
        return LimitTable(
            default=ModelLimits(rpm=self.groq_rpm_limit, tpm=self.groq_tpm_limit),
            per_model=self.groq_model_limits,
        )


class BatchLaneSettings(BaseSettings):
    """The batch lane (off by default) and what answers cost."""

    groq_batch_severities: Annotated[frozenset[Severity], NoDecode] = Field(
        frozenset(),
        description="Severities whose events go through Groq's Batch API (comma-separated, "
        "e.g. low,medium); empty: no batch lane.",
    )
    groq_batch_when_lag_above: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="With GROQ_BATCH_SEVERITIES: take the lane only while more than this "
        "many entries wait undelivered in the group (0: always).",
    )
    groq_batch_max_events: int = Field(
        1000,
        ge=1,
        le=MAX_FILE_LINES,
        description="A batch is submitted when this many requests wait (Groq: at most "
        "50,000 per batch; files are also kept under 100 MB).",
    )
    groq_batch_max_wait_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="...or when the oldest waiting request has waited this long.",
    )
    groq_batch_poll_seconds: float = Field(
        30.0,
        gt=0,
        le=3_600,
        description="How often the lane's one poller asks Groq about submitted batches.",
    )
    groq_batch_lock_seconds: float = Field(
        60.0,
        ge=1,
        le=3_600,
        description="Lease of the lane's one submitter and poller: how long a dead holder "
        "delays the takeover by another worker.",
    )
    groq_price_table: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='USD per million tokens, JSON: {"openai/gpt-oss-20b": {"input": 0.075, '
        '"output": 0.30}} (optional keys cached_input, default input/2, and batch_factor, '
        "default 0.5); models without a price add nothing to the estimated cost.",
    )

    @field_validator("groq_batch_severities", mode="before")
    @classmethod
    def _parse_batch_severities(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _lag_needs_severities(self) -> Self:
        if self.groq_batch_when_lag_above and not self.groq_batch_severities:
            raise ValueError(
                "GROQ_BATCH_WHEN_LAG_ABOVE: needs GROQ_BATCH_SEVERITIES (which severities may "
                "take the batch lane during a backlog)"
            )
        return self


class RetentionSettings(BaseSettings):
    """How long the inbound stream keeps what every consumer group has acknowledged."""

    stream_retention: RetentionMode = Field(
        RetentionMode.ACKED,
        description="acked: trim inbound entries every consumer group of the stream has "
        "acknowledged (the newest STREAM_KEEP_ENTRIES stay); off: never trim.",
    )
    stream_keep_entries: int = Field(
        100_000,
        ge=0,
        le=1_000_000_000,
        description="The newest inbound entries kept whatever their state.",
    )
    stream_trim_interval_seconds: float = Field(
        30.0, ge=0.1, le=86_400, description="How often a worker trims the inbound stream."
    )


class ClusterSettings(BaseSettings):
    """One Redis, or a Redis Cluster."""

    redis_mode: RedisMode = Field(
        RedisMode.STANDALONE,
        description="standalone: one Redis; cluster: a Redis Cluster, REDIS_URL names one "
        "seed node (the others are discovered).",
    )


class LogSettings(BaseSettings):
    """The worker's own log lines."""

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: LogFormat = Field(
        LogFormat.AUTO, description="json, console, or auto (console on a TTY, JSON otherwise)."
    )

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level
