"""Which model serves an event."""

from __future__ import annotations

from collections.abc import Collection

from app.domain.events import Severity

__all__ = [
    "choose_model",
    "is_reasoning_model",
    "supports_json_schema",
    "supports_strict_json_schema",
]


def choose_model(
    severity: Severity, *, deep_severities: Collection[Severity], fast: str, deep: str
) -> str:
    """The deep model for the severities an operator marked deep, the fast one otherwise."""
    return deep if severity in deep_severities else fast


# Groq's structured outputs: ``json_schema`` on these models; with ``strict: true``
# (constrained decoding, never an answer outside the schema) on the gpt-oss ones only, best
# effort on the others (Groq refuses strict where it has no constrained decoding). Other
# models get ``json_object``. Reasoning models take ``reasoning_effort``.
_JSON_SCHEMA_PREFIXES = ("openai/gpt-oss-", "moonshotai/kimi-k2", "meta-llama/llama-4-")
_STRICT_JSON_SCHEMA_PREFIXES = ("openai/gpt-oss-",)
_REASONING_PREFIXES = ("openai/gpt-oss-", "qwen/qwen3-")


def supports_json_schema(model: str) -> bool:
    return model.startswith(_JSON_SCHEMA_PREFIXES)


def supports_strict_json_schema(model: str) -> bool:
    return model.startswith(_STRICT_JSON_SCHEMA_PREFIXES)


def is_reasoning_model(model: str) -> bool:
    return model.startswith(_REASONING_PREFIXES)
