"""Which model serves which severity."""

from __future__ import annotations

import pytest

from app.domain.events import Severity
from app.domain.routing import choose_model, is_reasoning_model, supports_json_schema

DEEP = frozenset({Severity.HIGH, Severity.CRITICAL})


@pytest.mark.parametrize(
    ("severity", "model"),
    [
        (Severity.LOW, "fast"),
        (Severity.MEDIUM, "fast"),
        (Severity.HIGH, "deep"),
        (Severity.CRITICAL, "deep"),
    ],
)
def test_default_routing_sends_high_and_critical_to_the_deep_model(severity, model):
    """With the default DEEP_SEVERITIES, high and critical go deep, the rest fast."""
    assert choose_model(severity, deep_severities=DEEP, fast="fast", deep="deep") == model


def test_deep_severities_are_configurable():
    """An operator can send only critical to the deep model."""
    only_critical = {Severity.CRITICAL}
    assert choose_model(Severity.HIGH, deep_severities=only_critical, fast="f", deep="d") == "f"
    assert choose_model(Severity.CRITICAL, deep_severities=only_critical, fast="f", deep="d") == "d"


def test_model_traits():
    """gpt-oss models take a strict json_schema and reasoning_effort; older ones neither."""
    assert supports_json_schema("openai/gpt-oss-20b")
    assert is_reasoning_model("openai/gpt-oss-120b")
    assert not supports_json_schema("llama-3.1-8b-instant")
    assert not is_reasoning_model("llama-3.3-70b-versatile")
