"""Bytes as text, never an error: what Redis hands back, shown or stored as str."""

from __future__ import annotations

from typing import Any

__all__ = ["as_text"]


def as_text(value: Any) -> str:
    """``value`` as str: bytes decoded as UTF-8 (undecodable bytes escaped as ``\\xff``,
    never an error), anything else through ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)
