"""A dead letter holds the event once, and an oversize entry leaves a letter of bounded size."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.dead_letters import build_dead_letter, entry_size
from app.domain.insights import DeadLetter, DeadLetterReason

LIMIT = 262_144
BOUND = 32 * 1024  # what docs/operations.md promises of an oversize entry's letter


def letter(fields: Mapping[bytes, bytes], **known: Any) -> DeadLetter:
    return build_dead_letter(
        entry_id="1795573200000-0",
        stream="acp:groq_queue",
        fields=fields,
        reason=DeadLetterReason.INVALID,
        error=known.pop("error", "bad"),
        failed_at="2026-11-25T02:20:01.204Z",
        max_event_bytes=known.pop("max_event_bytes", LIMIT),
        **known,
    )


def test_the_field_the_event_came_from_is_not_repeated():
    """The gateway's payload becomes `payload`; the entry's other fields stay as received."""
    made = letter(
        {b"payload": b'{"event_id": "e"}', b"source": b"gw-1"},
        payload=b'{"event_id": "e"}',
        payload_field="payload",
    )
    assert (made.payload, made.payload_field) == ('{"event_id": "e"}', "payload")
    assert made.fields == {"source": "gw-1"}
    assert made.truncated is False


def test_a_payload_that_is_not_text_stays_a_field():
    """Bytes that are not UTF-8 are no replayable event: kept escaped among the fields."""
    made = letter({b"payload": b"\xff\xfe{}"}, payload=b"\xff\xfe{}", payload_field="payload")
    assert made.payload is None
    assert made.payload_field is None
    assert made.fields == {"payload": "\\xff\\xfe{}"}


def test_an_entry_over_the_limit_keeps_an_excerpt_its_size_and_its_hash():
    """2 MB in: the start of it to read, how big it was and what it was, no payload."""
    fields = {b"payload": b"{" + b"A" * 2_000_000 + b"}"}
    made = letter(fields, payload=fields[b"payload"], payload_field="payload")
    assert made.truncated is True
    assert made.payload is None
    assert made.entry_bytes == entry_size(fields) == 2_000_009
    assert made.entry_sha256 == hashlib.sha256(b"payload" + fields[b"payload"]).hexdigest()
    assert made.fields["payload"].startswith("{AAAA")
    assert made.fields["payload"].endswith("…[truncated, 2000002 bytes in all]")
    assert len(made.model_dump_json()) < 8_000


@settings(max_examples=60, deadline=None)
@given(
    fields=st.dictionaries(
        st.binary(min_size=1, max_size=2_000),
        st.binary(min_size=0, max_size=40_000) | st.just(b"\x00" * 300_000),
        min_size=1,
        max_size=40,
    ),
    error=st.text(max_size=10_000),
)
def test_whatever_an_oversize_entry_holds_its_letter_stays_small(fields, error):
    """Control characters (six bytes once escaped), invalid UTF-8, many fields, long names."""
    made = letter(fields, error=error, max_event_bytes=256)
    if entry_size(fields) > 256:
        assert made.truncated
        assert len(made.model_dump_json().encode()) < BOUND
    else:
        assert not made.truncated
