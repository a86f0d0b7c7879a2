"""Credentials of formats no rule was written for never reach the model (issue #21).

The table (``tests/support/secret_formats.py``) holds more than 40 formats from public
secret scanners' rule sets; the held-out ones are known to no named rule, so the rules for
keys of unknown format (a key's shape; a credential's name before a value) must catch
them alone, wherever the prompt carries them and in the model's answer.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.events import AuditEvent
from app.domain.prompt import build_insight_prompt
from app.domain.redaction import CREDENTIAL_KINDS, PLACEHOLDER, redact
from app.domain.sanitize import sanitize_text
from tests.support.audit_events import valid_event
from tests.support.secret_formats import FORMATS, HELD_OUT, Format


def _placements(row: Format) -> dict[str, AuditEvent]:
    """The row's text in a finding's detail and a plain finding, and where it fits (256
    characters) in the agent's name and a flag; the bare credential there too, unless only
    its name tells it apart from a hash or an id."""
    texts = {"": row.text} if row.by_name else {"": row.text, "bare ": row.value}
    placed = {
        "finding detail": valid_event(findings=[{"rule": "secrets.scan", "detail": row.text}]),
        "plain finding": valid_event(findings=[row.text]),
    }
    for bare, text in texts.items():
        if len(text) <= 256:
            placed[f"{bare}agent_name"] = valid_event(agent_name=text)
            placed[f"{bare}flag"] = valid_event(metadata={"flags": [text]})
    return placed


def test_the_table_holds_40_formats_and_15_held_out() -> None:
    """At least 40 formats, at least 15 of them known to no named rule, each once."""
    assert len(FORMATS) >= 40
    assert len(HELD_OUT) >= 15
    assert len({row.id for row in FORMATS}) == len(FORMATS)
    assert len({row.value for row in FORMATS}) == len(FORMATS)


@pytest.mark.parametrize("row", FORMATS, ids=[row.id for row in FORMATS])
def test_no_format_reaches_the_prompt_from_any_field(row: Format) -> None:
    """Each credential is masked in every field it is planted in, and counted."""
    for where, event in _placements(row).items():
        prompt = build_insight_prompt(event)
        assert row.value not in prompt.user, where
        assert prompt.redaction_count >= 1, where
        assert set(prompt.redactions) <= CREDENTIAL_KINDS, where


@pytest.mark.parametrize("row", HELD_OUT, ids=[row.id for row in HELD_OUT])
def test_held_out_formats_are_caught_by_the_rules_for_unknown_formats_alone(row: Format) -> None:
    """Without the rules for unknown formats the credential goes through (no named rule
    knows it); with them it is masked."""
    assert row.value in redact(row.text, unknown_formats=False)
    assert row.value not in redact(row.text)


@pytest.mark.parametrize("row", FORMATS, ids=[row.id for row in FORMATS])
def test_no_format_survives_the_output_sanitizer(row: Format) -> None:
    """The model repeating a credential stores a placeholder instead, the sentence kept."""
    cleaned = sanitize_text(f"The agent leaked it: {row.text}. Rotate it.")
    assert row.value not in cleaned
    assert cleaned.startswith("The agent leaked it: ")
    assert cleaned.endswith(". Rotate it.")


@pytest.mark.parametrize("row", FORMATS, ids=[row.id for row in FORMATS])
def test_scrubbing_a_format_twice_changes_nothing_and_counts_nothing(row: Format) -> None:
    """The placeholders of the rules for unknown formats pass every rule unchanged."""
    found: dict[str, int] = {}
    scrubbed = redact(row.text, found=found)
    again: dict[str, int] = {}
    assert redact(scrubbed, found=again) == scrubbed
    assert again == {}
    assert sum(found.values()) == len(PLACEHOLDER.findall(scrubbed))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=st.sampled_from(FORMATS),
    before=st.text(max_size=120),
    after=st.text(max_size=120),
    gap=st.sampled_from([" ", "\n", "\t", " : ", ". ", "\n\n", '"', "'"]),
)
def test_a_planted_credential_never_survives_whatever_text_surrounds_it(
    row: Format, before: str, after: str, gap: str
) -> None:
    """Arbitrary text around a planted credential: gone from the scrubbed text, the
    model's answer and the prompt."""
    text = f"{before}{gap}{row.text}{gap}{after}"
    for cleaned in (
        redact(text),
        sanitize_text(text),
        build_insight_prompt(valid_event(findings=[{"rule": "r", "detail": text[:2000]}])).user,
    ):
        assert row.value not in cleaned
