"""The worker's one settings object: every setting of the contract, read from the environment.

Nothing else in the project reads ``os.environ``. A bad value stops the worker at start
with a message that names the setting (see ``load_settings``); the API key is a
``SecretStr`` and is never part of that message. The settings are grouped by concern in
``app/settings/sections.py``; ``Settings`` is all of them at once, with the checks that
span sections.
"""

from __future__ import annotations

import re
from typing import Self

from pydantic import ValidationError, model_validator
from pydantic_settings import SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from app.domain.scheduling import EventOrder
from app.settings.kafka import Inbound, KafkaSettings
from app.settings.sections import (
    BatchLaneSettings,
    ClusterSettings,
    Everyday,
    LimitSettings,
    LLMProvider,
    LogFormat,
    LogSettings,
    ModelTuning,
    RedisMode,
    RetentionMode,
    RetentionSettings,
    SchedulingSettings,
    StreamTuning,
)
from app.settings.tracing import TracingSettings

__all__ = [
    "Inbound",
    "LLMProvider",
    "LogFormat",
    "RedisMode",
    "RetentionMode",
    "Settings",
    "SettingsError",
    "load_settings",
]

_UNPARSABLE_FIELD = re.compile(r'field "([a-z0-9_]+)"')

# EVENT_ORDER=priority: the subscriber's handlers beyond WORKER_CONCURRENCY (see handlers).
_SPARE_HANDLERS = 16


class Settings(
    KafkaSettings,
    TracingSettings,
    LogSettings,
    ClusterSettings,
    RetentionSettings,
    BatchLaneSettings,
    LimitSettings,
    ModelTuning,
    SchedulingSettings,
    StreamTuning,
    Everyday,
):
    """Environment settings of the worker (names as in the contract), every section."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    @property
    def read_count(self) -> int:
        """Entries one XREADGROUP may return: the read-ahead bound."""
        return self.read_batch_size or self.handlers

    @model_validator(mode="after")
    def _cluster_url(self) -> Self:
        if self.redis_mode is RedisMode.CLUSTER:
            if self.redis_url.scheme == "unix":
                raise ValueError(
                    "REDIS_URL: a unix socket cannot name a cluster node (REDIS_MODE=cluster)"
                )
            if (self.redis_url.path or "/").strip("/") not in {"", "0"}:
                raise ValueError(
                    "REDIS_URL: a Redis Cluster has only database 0 (REDIS_MODE=cluster)"
                )
        return self

    @model_validator(mode="after")
    def _models_and_provider(self) -> Self:
        problems = []
        if self.llm_provider is LLMProvider.OPENAI_COMPATIBLE and self.llm_base_url is None:
            problems.append("LLM_BASE_URL: required when LLM_PROVIDER=openai-compatible")
        if self.allowed_models:
            for name, model in (
                ("GROQ_MODEL_FAST", self.groq_model_fast),
                ("GROQ_MODEL_DEEP", self.groq_model_deep),
            ):
                if model not in self.allowed_models:
                    problems.append(f"{name}: {model!r} is not in ALLOWED_MODELS")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def scheduler_refusal(self) -> str | None:
        """Why this worker cannot run with these settings' scheduler, if it cannot (the
        operator's commands run whatever the worker's EVENT_ORDER)."""
        if self.event_order is EventOrder.PRIORITY and self.redis_mode is RedisMode.CLUSTER:
            # The scheduler's keys share one slot, but a cluster's admission spans several
            # slots in steps; scheduling among them is not built yet.
            return (
                "invalid settings: EVENT_ORDER: priority scheduling does not run with "
                "REDIS_MODE=cluster yet (set EVENT_ORDER=fifo, or use REDIS_MODE=standalone)"
            )
        return None

    @model_validator(mode="after")
    def _kafka_inbound(self) -> Self:
        if self.inbound is Inbound.KAFKA and self.redis_mode is RedisMode.CLUSTER:
            # An event's writes and the end of its entry go in one transaction; a Kafka
            # record's end is its offset commit, which the cluster store's steps do not
            # know yet.
            raise ValueError(
                "INBOUND: kafka does not run with REDIS_MODE=cluster yet "
                "(use REDIS_MODE=standalone)"
            )
        return self

    @property
    def handlers(self) -> int:
        """How many entries the subscriber handles at once: WORKER_CONCURRENCY, and with
        EVENT_ORDER=priority up to 16 more to schedule what finds no free slot, so that
        reading goes on during a flood (a handler schedules an event in about a round
        trip: 16 read faster than a process can parse). Not more: where the worker, not
        the model, is the bottleneck, every event a spare handler takes is scheduled,
        which costs more than running it."""
        if self.event_order is not EventOrder.PRIORITY:
            return self.worker_concurrency
        return self.worker_concurrency + min(self.worker_concurrency, _SPARE_HANDLERS)

    @model_validator(mode="after")
    def _service_tiers(self) -> Self:
        if self.groq_service_tiers and self.llm_provider is LLMProvider.OPENAI_COMPATIBLE:
            raise ValueError(
                "GROQ_SERVICE_TIERS: service tiers are Groq's; LLM_PROVIDER=openai-compatible "
                "has none (leave GROQ_SERVICE_TIERS empty)"
            )
        return self

    @model_validator(mode="after")
    def _batch_lane(self) -> Self:
        if self.groq_batch_severities and self.llm_provider is LLMProvider.OPENAI_COMPATIBLE:
            raise ValueError(
                "GROQ_BATCH_SEVERITIES: LLM_PROVIDER=openai-compatible has no Batch API "
                "(leave GROQ_BATCH_SEVERITIES empty)"
            )
        if self.groq_batch_severities and self.redis_mode is RedisMode.CLUSTER:
            # The lane's scripts keep a request, its lease and its entry's XACK together:
            # keys of several slots, which a cluster cannot hold in one script.
            raise ValueError(
                "GROQ_BATCH_SEVERITIES: the batch lane does not run with REDIS_MODE=cluster "
                "yet (leave GROQ_BATCH_SEVERITIES empty, or use REDIS_MODE=standalone)"
            )
        return self


class SettingsError(Exception):
    """A setting has a bad value; the message names each such setting, never its value."""


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's error into one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_settings_error(exc)) from None
    except PydanticSettingsError as exc:  # a JSON setting that is not JSON
        field = _UNPARSABLE_FIELD.search(str(exc))
        name = field.group(1).upper() if field else "a JSON setting"
        raise SettingsError(f"invalid settings: {name}: not valid JSON") from None


def describe_settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if name else message)
    return "invalid settings: " + "; ".join(lines)
