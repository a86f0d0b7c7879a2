"""One table, two directions: what the prompt scrubber masks, the output sanitizer masks too.

The rows of ``tests/support/secret_table.py`` go through the prompt builder (in every
field the prompt carries) and through the output sanitizer; a property test plants them in
arbitrary text; a corpus of ordinary finding texts measures the false positives.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.events import AuditEvent
from app.domain.prompt import FIELD_CAPS, build_insight_prompt
from app.domain.redaction import CREDENTIAL_KINDS, PII_KINDS, PLACEHOLDER, placeholder, redact
from app.domain.sanitize import sanitize_text
from tests.support.audit_events import valid_event
from tests.support.secret_table import CREDENTIAL_ROWS, PII_ROWS, ROWS, Row

CORPUS = Path(__file__).resolve().parents[1] / "data" / "finding_corpus.txt"
_EXPECT = re.compile(r"\[expect ([a-z_,]+)\] (.*)")

# Ordinary texts of the corpus that a rule changes although nothing in them is a
# credential or a person's data. The README states this rate; a change here is a
# change of the rules to explain there.
KNOWN_FALSE_POSITIVES = {
    # a GCP service account's address: shaped like an email, names a machine identity
    "service account reader@billing-prod.iam.gserviceaccount.com used from a new IP",
    # a mail's Message-ID: shaped like an email too
    "email message id CAJd2yH4xq8@mail.example.com threaded",
}
# The share of ordinary texts the rules may change (README: "False positives, measured").
MAX_FALSE_POSITIVE_RATE = 0.01


def _placements(row: Row) -> dict[str, tuple[AuditEvent, str]]:
    """The row's text in every string field of the prompt that can hold it (and its cap)."""
    placed = {
        "finding detail": (
            valid_event(findings=[{"rule": "secrets.scan", "detail": row.text}]),
            "detail",
        ),
        "plain finding": (valid_event(findings=[row.text]), "finding"),
    }
    if len(row.text) <= 256:
        placed["agent_name"] = (valid_event(agent_name=row.text), "agent_name")
        placed["tool_name"] = (valid_event(tool_name=row.text), "tool_name")
        placed["finding rule"] = (valid_event(findings=[{"rule": row.text}]), "rule")
        placed["flag"] = (valid_event(metadata={"flags": [row.text]}), "flag")
    if len(row.text) <= 64:
        placed["decision"] = (valid_event(decision=row.text), "decision")
    return placed


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_no_row_of_the_table_reaches_the_prompt_from_any_field(row: Row) -> None:
    """Every kind is masked wherever the prompt carries it, as a placeholder of its kind.

    (A field cap shorter than the scrubbed text may cut the placeholder off; it is
    never cut in half, and the count still says it was there.)
    """
    for where, (event, cap) in _placements(row).items():
        prompt = build_insight_prompt(event)
        for secret in row.secrets:
            assert secret not in prompt.user, where
            assert secret not in prompt.system, where
        assert prompt.redactions.get(row.kind, 0) >= 1, where
        if len(redact(row.text)) <= FIELD_CAPS[cap]:
            assert placeholder(row.kind) in prompt.user, where
        assert "[redacted:…" not in prompt.user
        assert len(PLACEHOLDER.findall(prompt.user)) == prompt.user.count("[redacted:")


def test_the_agent_id_sent_when_the_agent_has_no_name_is_scrubbed_too() -> None:
    """An agent id shaped like a key (ids allow it) goes as a placeholder."""
    prompt = build_insight_prompt(valid_event(agent_id="AKIAZ7XQ4PLM2NB6VC3D"))
    assert "AKIAZ7XQ4PLM2NB6VC3D" not in prompt.user
    assert prompt.redactions == {"aws_access_key": 1}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_no_row_of_the_table_survives_the_output_sanitizer(row: Row) -> None:
    """The same table against the model's answer: each kind becomes its placeholder."""
    cleaned = sanitize_text(f"The agent leaked it: {row.text}\nRotate it.")
    for secret in row.secrets:
        assert secret not in cleaned
    assert placeholder(row.kind) in cleaned
    assert cleaned.startswith("The agent leaked it: ")
    cut_short_key = "PRIVATE KEY" in row.text and "-----END" not in row.text
    # a private key block without its END line is removed up to the end of the text
    assert cleaned.endswith("\nRotate it.") is not cut_short_key


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_placeholders_pass_the_output_sanitizer_unchanged(row: Row) -> None:
    """An answer repeating the prompt's placeholders is stored as it is, counted once."""
    found: dict[str, int] = {}
    scrubbed = redact(row.text, found=found)
    again: dict[str, int] = {}
    assert redact(scrubbed, found=again) == scrubbed
    assert again == {}
    assert sanitize_text(f"Summary: {scrubbed}") == f"Summary: {scrubbed}"
    assert sum(found.values()) == len(PLACEHOLDER.findall(scrubbed))


def test_every_kind_of_the_table_is_a_declared_kind() -> None:
    """The table covers credentials and personal data, each kind declared by the rules."""
    assert {row.kind for row in CREDENTIAL_ROWS} <= CREDENTIAL_KINDS
    assert {row.kind for row in PII_ROWS} == PII_KINDS
    assert len(ROWS) >= 13 + 6


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=st.sampled_from(ROWS),
    before=st.text(max_size=120),
    after=st.text(max_size=120),
    gap=st.sampled_from([" ", "\n", "\t", " : ", ". ", "\n\n"]),
)
def test_a_planted_secret_never_survives_whatever_text_surrounds_it(
    row: Row, before: str, after: str, gap: str
) -> None:
    """Arbitrary text around a planted secret: gone from the prompt and from the answer."""
    text = f"{before}{gap}{row.text}{gap}{after}"
    for cleaned in (
        redact(text),
        sanitize_text(text),
        build_insight_prompt(valid_event(findings=[{"rule": "r", "detail": text[:2000]}])).user,
    ):
        for secret in row.secrets:
            assert secret not in cleaned


@pytest.mark.parametrize("row", CREDENTIAL_ROWS, ids=[row.id for row in CREDENTIAL_ROWS])
def test_with_pii_masking_off_credentials_are_still_scrubbed(row: Row) -> None:
    """PROMPT_REDACT_PII=false never sends a credential."""
    prompt = build_insight_prompt(
        valid_event(findings=[{"rule": "secrets.scan", "detail": row.text}]), redact_pii=False
    )
    for secret in row.secrets:
        assert secret not in prompt.user
    assert placeholder(row.kind) in prompt.user


def test_with_pii_masking_off_an_email_and_a_card_go_through() -> None:
    """PROMPT_REDACT_PII=false: personal data reaches the prompt and the stored answer."""
    detail = "customer jane.doe@example.org paid with 4111 1111 1111 1111"
    prompt = build_insight_prompt(
        valid_event(findings=[{"rule": "pii.scan", "detail": detail}]), redact_pii=False
    )
    assert detail in prompt.user
    assert prompt.redactions == {}
    assert sanitize_text(detail, pii=False) == detail
    masked = build_insight_prompt(valid_event(findings=[{"rule": "pii.scan", "detail": detail}]))
    assert masked.redactions == {"email": 1, "card_number": 1}


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails the Luhn check
        "1795573200123",  # epoch milliseconds
        "GB82 WEST 1234 5698 7654 33",  # fails mod 97
        "+01:00",  # a UTC offset
        "2026-11-25 12:30:45",
        "call 123-456-7890",  # no North American area code starts with 1
    ],
)
def test_near_misses_of_personal_data_pass_unchanged(text: str) -> None:
    """Numbers that fail the card, IBAN or phone checks are kept."""
    assert redact(text) == text


def _corpus() -> list[tuple[str, set[str]]]:
    entries = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        expected = _EXPECT.fullmatch(line)
        if expected:
            entries.append((expected.group(2), set(expected.group(1).split(","))))
        else:
            entries.append((line, set()))
    return entries


def test_ordinary_finding_texts_pass_unchanged_but_for_the_known_false_positives() -> None:
    """At least 300 ordinary texts, hashes, ids, addresses and names among them: only the
    known false positives change, at most 1% of them (README's rate)."""
    ordinary = [text for text, kinds in _corpus() if not kinds]
    assert len(ordinary) >= 300
    changed = {text for text in ordinary if redact(text) != text}
    assert changed == KNOWN_FALSE_POSITIVES
    rate = len(changed) / len(ordinary)
    assert rate <= MAX_FALSE_POSITIVE_RATE
    print(f"false positives: {len(changed)} of {len(ordinary)} ({rate:.1%})")


def test_corpus_texts_that_hold_personal_data_or_credentials_are_masked_as_such() -> None:
    """The corpus's lines that do hold something are masked, with exactly the kinds named."""
    marked = [(text, kinds) for text, kinds in _corpus() if kinds]
    assert marked
    for text, kinds in marked:
        found: dict[str, int] = {}
        redact(text, found=found)
        assert set(found) == kinds, text
