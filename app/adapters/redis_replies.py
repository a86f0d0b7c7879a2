"""Reading Redis replies whether the client decodes responses or not.

The worker's clients return bytes; a client made with ``decode_responses=True`` returns
str. Entry ids, group and consumer names and key names go through ``as_text`` either way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_text", "int_or_none"]


def as_text(value: Any) -> str:
    """A reply value as str: bytes decoded as UTF-8 (undecodable bytes escaped, never an
    error), anything else through ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def int_or_none(value: Any) -> int | None:
    """A reply value as int (``b"12"``, ``"12"``, ``12``); None when absent or not a number
    (``XINFO`` answers nil for a lag Redis cannot compute)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
