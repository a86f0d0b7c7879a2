"""The event schema v1: the contract's field rules, field by field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.domain.events import AuditEvent, Finding, Severity
from tests.support.audit_events import valid_body


def test_a_minimal_event_is_valid():
    """The six required fields are enough; optional ones default to empty."""
    event = AuditEvent.model_validate(valid_body())
    assert event.severity is Severity.HIGH
    assert event.findings == []
    assert event.flags == []
    assert event.epoch_seconds == 1_795_573_200.0


@pytest.mark.parametrize(
    "field", ["event_id", "tenant_id", "agent_id", "severity", "decision", "timestamp"]
)
def test_each_required_field_is_required(field):
    """Leaving out any required field fails, naming that field."""
    body = valid_body()
    del body[field]
    with pytest.raises(ValidationError) as info:
        AuditEvent.model_validate(body)
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "acme:other"),
        ("tenant_id", "ac*me"),
        ("tenant_id", "ac me"),
        ("tenant_id", "acme\n"),
        ("tenant_id", "-acme"),
        ("tenant_id", "a" * 65),
        ("tenant_id", ""),
        ("agent_id", "bot:1"),
        ("agent_id", "bot\r\nFLUSHALL"),
        ("agent_id", "bot{1}"),
        ("event_id", "evt 1"),
        ("event_id", "evt*"),
        ("event_id", "e" * 129),
        ("event_id", "evt-1\n"),
    ],
)
def test_ids_that_could_smuggle_key_syntax_are_refused(field, value):
    """Colons, globs, spaces and newlines never pass the id patterns (keys stay safe)."""
    with pytest.raises(ValidationError) as info:
        AuditEvent.model_validate(valid_body(**{field: value}))
    assert info.value.errors()[0]["loc"] == (field,)


def test_event_id_may_hold_colons_dots_and_dashes():
    """The event id pattern is wider than the tenant's: `:` `.` `_` `-` are allowed."""
    assert (
        AuditEvent.model_validate(valid_body(event_id="gw:eu-1.evt_9")).event_id == "gw:eu-1.evt_9"
    )


@pytest.mark.parametrize("severity", ["LOW", "info", "", "severe"])
def test_severity_is_one_of_four(severity):
    """Only low, medium, high and critical are severities."""
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(valid_body(severity=severity))


@pytest.mark.parametrize("decision", ["", "x" * 65])
def test_decision_is_1_to_64_chars(decision):
    """An empty or over-long decision is refused."""
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(valid_body(decision=decision))


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        (1_795_573_200, 1_795_573_200.0),
        (1_795_573_200.25, 1_795_573_200.25),
        ("2026-11-25T02:20:00Z", 1_795_573_200.0),
        ("2026-11-25T03:20:00+01:00", 1_795_573_200.0),
    ],
)
def test_timestamp_is_epoch_seconds_or_rfc3339(value, epoch):
    """Numbers are epoch seconds; strings are RFC 3339 date-times with an offset."""
    assert AuditEvent.model_validate(valid_body(timestamp=value)).epoch_seconds == epoch


@pytest.mark.parametrize("value", ["yesterday", "2026-11-25T02:20:00", True, -5, 1e12, None, []])
def test_bad_timestamps_are_refused(value):
    """Words, naive date-times, booleans, negative or absurd numbers are not timestamps."""
    with pytest.raises(ValidationError) as info:
        AuditEvent.model_validate(valid_body(timestamp=value))
    assert info.value.errors()[0]["loc"][0] == "timestamp"


def test_findings_are_objects_or_plain_strings():
    """A finding is an object (rule, detail, severity) or a string."""
    event = AuditEvent.model_validate(
        valid_body(findings=[{"rule": "r1", "detail": "d", "severity": "low"}, "plain text"])
    )
    assert event.findings == [Finding(rule="r1", detail="d", severity=Severity.LOW), "plain text"]


def test_metadata_flags_must_be_strings():
    """metadata.flags, the only metadata used, is a list of strings."""
    assert AuditEvent.model_validate(valid_body(metadata={"flags": ["a", "b"]})).flags == ["a", "b"]
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(valid_body(metadata={"flags": "a"}))
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(valid_body(metadata={"flags": [1]}))


def test_unknown_fields_are_kept_not_refused():
    """raw_input and other fields are allowed (and later kept out of prompts)."""
    event = AuditEvent.model_validate(valid_body(raw_input="x", tool_args={"a": 1}))
    assert event.model_extra == {"raw_input": "x", "tool_args": {"a": 1}}


def test_optional_names_are_capped_at_256_chars():
    """agent_name and tool_name are at most 256 characters."""
    with pytest.raises(ValidationError):
        AuditEvent.model_validate(valid_body(tool_name="t" * 257))


def test_rfc3339_timestamp_keeps_its_instant():
    """An RFC 3339 string is parsed into an aware datetime at the same instant."""
    event = AuditEvent.model_validate(valid_body(timestamp="2026-11-25T02:20:00Z"))
    assert event.timestamp == datetime(2026, 11, 25, 2, 20, tzinfo=UTC)
