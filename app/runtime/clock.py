"""The wall clock as the worker writes it: RFC 3339 in UTC, to the millisecond."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_now"]


def utc_now() -> str:
    """Now, as ``2026-11-25T02:20:01.204Z`` (``created_at``, ``failed_at``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
