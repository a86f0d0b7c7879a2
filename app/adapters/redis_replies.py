"""Reading Redis replies whether the client decodes responses or not.

The worker's clients return bytes; a client made with ``decode_responses=True`` returns
str. Entry ids, group and consumer names and key names go through ``as_text`` either way.
"""

from __future__ import annotations

from typing import Any

from app.domain.text import as_text

__all__ = ["as_text", "int_or_none"]


def int_or_none(value: Any) -> int | None:
    """A reply value as int (``b"12"``, ``"12"``, ``12``); None when absent or not a number
    (``XINFO`` answers nil for a lag Redis cannot compute)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
