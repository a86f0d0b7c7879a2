"""What a model answer cost, from the per-token prices the operator configures.

Prices are the operator's (``GROQ_PRICE_TABLE``): the worker ships none, because a price
list goes stale and the bill is what the provider says. Groq bills a prompt's cached
tokens at half the input price (the default of ``cached_input``) and the Batch API at a
discount (``batch_factor``, default 0.5: Groq states 50%). The estimate is what
``acp_groq_estimated_cost_usd_total{tenant_id,lane}`` adds up, so a tenant's spend can
be graphed; it is an estimate, not an invoice.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TOKENS_PER_PRICE_UNIT", "Lane", "ModelPrice", "answer_cost"]

TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are USD per million tokens, as providers list them


class Lane(StrEnum):
    """How an event's answer was asked for: a chat completion now, or Groq's Batch API."""

    ONLINE = "online"
    BATCH = "batch"


class ModelPrice(BaseModel):
    """One model's prices in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, le=1_000, description="Prompt tokens, USD per million.")
    output: float = Field(ge=0, le=1_000, description="Completion tokens, USD per million.")
    cached_input: float | None = Field(
        None,
        ge=0,
        le=1_000,
        description="Cached prompt tokens, USD per million (default: half of input).",
    )
    batch_factor: float = Field(
        0.5, gt=0, le=1, description="Share of the online price a Batch API answer costs."
    )

    @property
    def cached(self) -> float:
        return self.input / 2 if self.cached_input is None else self.cached_input


def answer_cost(
    prices: Mapping[str, ModelPrice],
    model: str,
    *,
    prompt_tokens: int | None,
    cached_tokens: int | None,
    completion_tokens: int | None,
    lane: Lane = Lane.ONLINE,
) -> float | None:
    """USD one answer cost, or None when the model has no price (nothing is guessed).

    ``prompt_tokens`` includes the cached ones, as ``usage`` reports them.
    """
    price = prices.get(model)
    if price is None:
        return None
    prompt = prompt_tokens or 0
    cached = min(cached_tokens or 0, prompt)
    cost = (
        (prompt - cached) * price.input
        + cached * price.cached
        + (completion_tokens or 0) * price.output
    ) / TOKENS_PER_PRICE_UNIT
    return cost * price.batch_factor if lane is Lane.BATCH else cost
