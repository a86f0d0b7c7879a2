"""acp-groq-worker: audit events from a Redis stream in, analyst insights out.

``faststream run app:app`` runs the worker. ``app`` is built on first access rather than
at import, so importing ``app.domain`` (tests, the CLI, tools) builds nothing, and a bad
setting stops ``faststream run`` with one line naming it instead of a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    from app.bootstrap import create_app
    from app.settings import SettingsError

    try:
        application = create_app()
    except SettingsError as exc:
        raise SystemExit(f"acp-groq-worker: {exc}") from None
    globals()["app"] = application
    return application
