"""The README's settings table lists every setting the worker reads."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table():
    """A setting added to Settings without a README row fails here."""
    text = README.read_text()
    missing = [
        name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in text
    ]
    assert missing == []
