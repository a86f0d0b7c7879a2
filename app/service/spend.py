"""What an answer cost: its tokens by kind and lane, and its price at the configured rates.

``acp_groq_llm_tokens_total{tenant_id,model,kind}`` (``cached``: the part of the prompt the
provider served from its prompt cache), ``acp_groq_lane_tokens_total{lane,kind}``, and
``acp_groq_estimated_cost_usd_total{tenant_id,lane}`` at the prices of ``GROQ_PRICE_TABLE``
(a model without a price adds nothing: nothing is guessed).
"""

from __future__ import annotations

from collections.abc import Mapping

from app.domain.costs import Lane, ModelPrice, answer_cost
from app.domain.ports import Completion
from app.runtime.metrics import Labelled, Metrics

__all__ = ["Spend"]


class Spend:
    """Counts the tokens and the estimated cost of each answer."""

    def __init__(self, prices: Mapping[str, ModelPrice], metrics: Metrics) -> None:
        self._prices = prices
        self._tokens = Labelled(metrics.llm_tokens)
        self._lane_tokens = Labelled(metrics.lane_tokens)
        self._cost = Labelled(metrics.estimated_cost)

    def count(self, tenant_id: str, model: str, completion: Completion, lane: Lane) -> None:
        for kind, tokens in (
            ("prompt", completion.prompt_tokens),
            ("completion", completion.completion_tokens),
            ("cached", completion.cached_tokens),
        ):
            if tokens:
                self._tokens(tenant_id, model, kind).inc(tokens)
                self._lane_tokens(lane.value, kind).inc(tokens)
        cost = answer_cost(
            self._prices,
            model,
            prompt_tokens=completion.prompt_tokens,
            cached_tokens=completion.cached_tokens,
            completion_tokens=completion.completion_tokens,
            lane=lane,
        )
        if cost:
            self._cost(tenant_id, lane.value).inc(cost)
