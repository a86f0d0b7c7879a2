"""What an answer cost: operator prices, cached prompt tokens at their price, the batch lane."""

from __future__ import annotations

import pytest

from app.domain.costs import Lane, ModelPrice, answer_cost
from app.settings import SettingsError, load_settings

PRICES = {"fast": ModelPrice(input=0.10, output=0.50)}


def test_an_online_answer_costs_its_prompt_and_completion_tokens():
    """1M prompt tokens at 0.10 and 1M completion tokens at 0.50 cost 0.60 USD."""
    cost = answer_cost(
        PRICES, "fast", prompt_tokens=1_000_000, cached_tokens=0, completion_tokens=1_000_000
    )
    assert cost == pytest.approx(0.60)


def test_cached_prompt_tokens_cost_half_the_input_price_by_default():
    """Of 1M prompt tokens, 600k cached: 400k at 0.10 and 600k at 0.05 per million."""
    cost = answer_cost(
        PRICES, "fast", prompt_tokens=1_000_000, cached_tokens=600_000, completion_tokens=0
    )
    assert cost == pytest.approx(0.04 + 0.03)


def test_a_batch_answer_costs_the_batch_factor_of_the_online_price():
    prices = {"fast": ModelPrice(input=0.10, output=0.50, batch_factor=0.75)}
    online = answer_cost(prices, "fast", prompt_tokens=1000, cached_tokens=0, completion_tokens=400)
    batch = answer_cost(
        prices, "fast", prompt_tokens=1000, cached_tokens=0, completion_tokens=400, lane=Lane.BATCH
    )
    assert online is not None
    assert batch == pytest.approx(online * 0.75)


def test_a_model_without_a_price_costs_nothing_known():
    """No guessed price: the estimate is None, and nothing is added to the cost metric."""
    assert (
        answer_cost(PRICES, "other", prompt_tokens=5, cached_tokens=0, completion_tokens=5) is None
    )


def test_more_cached_than_prompt_tokens_is_capped_at_the_prompt():
    cost = answer_cost(PRICES, "fast", prompt_tokens=100, cached_tokens=500, completion_tokens=0)
    assert cost == pytest.approx(100 * 0.05 / 1_000_000)


def test_the_price_table_is_read_from_json(monkeypatch):
    monkeypatch.setenv(
        "GROQ_PRICE_TABLE", '{"openai/gpt-oss-20b": {"input": 0.075, "output": 0.3}}'
    )
    settings = load_settings(_env_file=None)
    price = settings.groq_price_table["openai/gpt-oss-20b"]
    assert (price.input, price.cached, price.output, price.batch_factor) == (
        0.075,
        0.0375,
        0.3,
        0.5,
    )


@pytest.mark.parametrize(
    "table",
    ['{"m": {"input": -1, "output": 1}}', '{"m": {"input": 1}}', "not json", '{"m": {"inp": 1}}'],
)
def test_a_bad_price_table_stops_the_worker_naming_the_setting(monkeypatch, table):
    monkeypatch.setenv("GROQ_PRICE_TABLE", table)
    with pytest.raises(SettingsError, match="GROQ_PRICE_TABLE"):
        load_settings(_env_file=None)
