"""The prompt is built from the allow-list only; answers are parsed into an insight."""

from __future__ import annotations

import json

import pytest

from app.domain.events import AuditEvent
from app.domain.insights import Risk
from app.domain.prompt import build_insight_prompt, parse_insight_answer, prompt_fields

PLANTED = "PLANTED-SECRET-7f3a"


def event_with_secrets() -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "event_id": "evt-1",
            "tenant_id": "acme",
            "agent_id": "billing-agent",
            "agent_name": "Billing assistant",
            "tool_name": "http.post",
            "decision": "deny",
            "severity": "critical",
            "timestamp": 1_795_573_200,
            "findings": [{"rule": "pii.card", "detail": "a card number", "severity": "high"}],
            "metadata": {"flags": ["after_hours"], "session": f"{PLANTED}-metadata"},
            "raw_input": f"{PLANTED}-raw-input",
            "tool_arguments": {"url": "https://x.example", "body": f"{PLANTED}-argument"},
            "user_email": f"{PLANTED}@example.com",
        }
    )


def test_planted_secrets_outside_the_allow_list_never_reach_the_prompt():
    """raw_input, tool arguments, metadata outside flags and unknown fields stay out."""
    prompt = build_insight_prompt(event_with_secrets())
    system, user = prompt.system, prompt.user
    assert PLANTED not in system
    assert PLANTED not in user


def test_the_prompt_carries_every_allow_listed_field():
    """Agent name, tool name, decision, severity, findings and metadata.flags are sent."""
    user = build_insight_prompt(event_with_secrets()).user
    for expected in (
        "Billing assistant",
        "http.post",
        "deny",
        "critical",
        "pii.card",
        "a card number",
        "after_hours",
    ):
        assert expected in user


def test_prompt_fields_are_exactly_the_allow_list():
    """The facts object has exactly the six allow-listed keys."""
    assert set(prompt_fields(event_with_secrets())) == {
        "agent_name",
        "tool_name",
        "decision",
        "severity",
        "findings",
        "flags",
    }


def test_the_prompt_asks_for_json():
    """JSON mode needs the word json in the messages."""
    prompt = build_insight_prompt(event_with_secrets())
    system, user = prompt.system, prompt.user
    assert "json" in (system + user).lower()


def test_a_json_answer_becomes_an_insight():
    """summary, risk and recommendation are read from a JSON object."""
    insight = parse_insight_answer(
        json.dumps({"summary": "S", "risk": "High", "recommendation": "R"})
    )
    assert (insight.summary, insight.risk, insight.recommendation) == ("S", Risk.HIGH, "R")


def test_a_fenced_json_answer_is_read_too():
    """Models that wrap JSON in a code fence still give a structured insight."""
    answer = '```json\n{"summary": "S", "risk": "low", "recommendation": "R"}\n```'
    assert parse_insight_answer(answer).risk is Risk.LOW


@pytest.mark.parametrize("answer", ["The agent tried to exfiltrate data.", "[1, 2]", "{broken"])
def test_prose_becomes_the_summary(answer):
    """An answer that is not a JSON object still yields an insight: the text as summary."""
    insight = parse_insight_answer(answer)
    assert insight.summary == answer
    assert insight.risk is Risk.UNKNOWN
    assert insight.recommendation == ""


def test_an_unknown_risk_is_unknown_not_an_error():
    """A risk outside the four levels is recorded as unknown."""
    insight = parse_insight_answer('{"summary": "S", "risk": "spicy", "recommendation": "R"}')
    assert insight.risk is Risk.UNKNOWN
