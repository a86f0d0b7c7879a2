"""The README's settings tables list every setting the worker reads, grouped as the code."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from app.settings import Settings, sections
from app.settings.kafka import KafkaSettings
from app.settings.tracing import TracingSettings

README = Path(__file__).resolve().parents[2] / "README.md"

# The README's subsections of "## Settings", in order, and the section of the code each
# one documents.
TABLES: list[tuple[str, type[BaseSettings]]] = [
    ("The everyday eight", sections.Everyday),
    ("Tuning: the stream, the group and this consumer", sections.StreamTuning),
    ("Scheduling", sections.SchedulingSettings),
    ("Tuning: the model calls", sections.ModelTuning),
    ("Limits", sections.LimitSettings),
    ("The batch lane and costs", sections.BatchLaneSettings),
    ("Stream retention", sections.RetentionSettings),
    ("Cluster", sections.ClusterSettings),
    ("Logs", sections.LogSettings),
    ("Tracing", TracingSettings),
    ("Kafka inbound", KafkaSettings),
]


def settings_tables() -> dict[str, list[str]]:
    """Each subsection of the README's "## Settings": the settings its table lists."""
    text = README.read_text()
    block = text[text.index("\n## Settings\n") : text.index("\n## What the model sees")]
    tables: dict[str, list[str]] = {}
    heading = ""
    for line in block.splitlines():
        if line.startswith("### "):
            heading = line.removeprefix("### ")
            tables[heading] = []
        elif match := re.match(r"^\| `([A-Z0-9_]+)` \|", line):
            tables[heading].append(match.group(1))
    return tables


def test_every_setting_is_in_the_readme_table():
    """A setting added to Settings without a README row fails here."""
    listed = [name for names in settings_tables().values() for name in names]
    assert sorted(listed) == sorted(name.upper() for name in Settings.model_fields)


def test_the_readme_groups_the_settings_as_the_code_does():
    """Each table of the README holds exactly one section of app/settings/sections.py."""
    tables = settings_tables()
    assert list(tables) == [title for title, _ in TABLES]
    for title, section in TABLES:
        assert tables[title] == [name.upper() for name in section.model_fields], title
    assert len(tables["The everyday eight"]) == 8
