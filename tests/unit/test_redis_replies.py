"""Reading Redis reply values, decoded or not, the one way every adapter reads them."""

from __future__ import annotations

import pytest

from app.adapters.redis_replies import as_text, int_or_none


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1764000000001-0", "1764000000001-0"),
        ("1764000000001-0", "1764000000001-0"),
        ("worker-\u00e9", "worker-\u00e9"),
        ("worker-\u00e9".encode(), "worker-\u00e9"),
        (b"bad-\xff", "bad-\\xff"),  # undecodable bytes are escaped, never an error
        (42, "42"),
    ],
)
def test_as_text_reads_bytes_and_str_alike(value, expected):
    """Bytes are UTF-8 decoded (escaping what is not UTF-8), other values go through str."""
    assert as_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"12", 12), ("12", 12), (12, 12), (None, None), (b"", None), ("lag", None), ([1], None)],
)
def test_int_or_none_reads_numbers_and_says_none_for_the_rest(value, expected):
    """Numbers in any reply form become int; nil or anything else is None (unknown)."""
    assert int_or_none(value) == expected
