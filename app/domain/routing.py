"""Which model serves an event, and on which of Groq's service tiers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

from app.domain.events import Severity

__all__ = [
    "URGENT_SEVERITIES",
    "ServiceTier",
    "choose_model",
    "choose_tier",
    "is_reasoning_model",
    "parse_service_tiers",
    "supports_json_schema",
    "supports_strict_json_schema",
]


def choose_model(
    severity: Severity, *, deep_severities: Collection[Severity], fast: str, deep: str
) -> str:
    """The deep model for the severities an operator marked deep, the fast one otherwise."""
    return deep if severity in deep_severities else fast


class ServiceTier(StrEnum):
    """Groq's ``service_tier``: ``on_demand`` (the default), ``flex`` (higher limits at the
    same price, refused at once with 498 ``capacity_exceeded`` when Groq is busy), ``auto``
    (on-demand, then flex past the on-demand limits), ``performance`` (provisioned)."""

    ON_DEMAND = "on_demand"
    FLEX = "flex"
    AUTO = "auto"
    PERFORMANCE = "performance"


URGENT_SEVERITIES = frozenset({Severity.CRITICAL, Severity.HIGH})
"""An urgent event's call that flex refuses goes again at once on ``on_demand``; the others
wait for flex capacity and try again (``GROQ_SERVICE_TIERS``)."""


def choose_tier(severity: Severity, tiers: Mapping[Severity, ServiceTier]) -> ServiceTier | None:
    """The tier for ``severity`` (``GROQ_SERVICE_TIERS``), None to send none (Groq's own
    default, on-demand)."""
    return tiers.get(severity)


def parse_service_tiers(text: str) -> dict[Severity, ServiceTier]:
    """``critical=on_demand,low=flex`` as a mapping; ValueError naming what is wrong."""
    tiers: dict[Severity, ServiceTier] = {}
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        severity, equals, tier = (side.strip().lower() for side in part.partition("="))
        if not equals:
            raise ValueError(f"{part[:40]!r} is not severity=tier")
        try:
            known = Severity(severity)
        except ValueError:
            names = ", ".join(s.value for s in Severity)
            raise ValueError(f"{severity[:40]!r} is not a severity ({names})") from None
        if known in tiers:
            raise ValueError(f"{known.value} is given twice")
        try:
            tiers[known] = ServiceTier(tier)
        except ValueError:
            names = ", ".join(t.value for t in ServiceTier)
            raise ValueError(f"{tier[:40]!r} is not a service tier ({names})") from None
    return tiers


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
