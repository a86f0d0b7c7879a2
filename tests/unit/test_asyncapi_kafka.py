"""The AsyncAPI document of a worker on Kafka (``asyncapi/kafka/``): generated, not drifted.

``groq-worker asyncapi --inbound kafka`` writes what ``INBOUND=kafka faststream docs gen
app:app`` writes; the committed copy must match it, and it must describe the Kafka channel
(the topic, the event schema) beside the Redis channels the worker still writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.cli.asyncapi import generate
from app.settings import Inbound

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "asyncapi" / "kafka"


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((COMMITTED / "asyncapi.json").read_text())
    return loaded


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_the_committed_kafka_document_is_what_the_code_generates(fmt):
    """Regenerate with `groq-worker asyncapi --inbound kafka -o asyncapi/kafka/asyncapi.*`."""
    expected = (COMMITTED / f"asyncapi.{fmt}").read_text(encoding="utf-8")
    assert generate(fmt, Inbound.KAFKA) == expected


def test_check_compares_the_kafka_document_in_its_own_directory(capsys):
    """`--check --inbound kafka` looks in asyncapi/kafka/ and says both files match."""
    assert main(["asyncapi", "--check", "--inbound", "kafka", "--dir", str(COMMITTED)]) == 0
    assert "match the code" in capsys.readouterr().out


def test_check_reports_a_drifted_kafka_document(tmp_path, capsys):
    """A stale copy fails with the command that regenerates it."""
    (tmp_path / "asyncapi.yaml").write_text("asyncapi: 3.0.0\n")
    assert main(["asyncapi", "--check", "--inbound", "kafka", "--dir", str(tmp_path)]) == 1
    assert "groq-worker asyncapi --inbound kafka -o" in capsys.readouterr().err


def test_the_kafka_document_describes_the_topic_and_the_event():
    """The inbound channel is the contract's topic with a Kafka binding, its message the
    AuditEvent schema; the server is Kafka; the Redis channels the worker writes remain."""
    document = committed()
    channel = document["channels"]["acp.groq.events:consume"]
    assert channel["address"] == "acp.groq.events"
    assert channel["bindings"]["kafka"]["topic"] == "acp.groq.events"
    message = document["components"]["messages"]["acp.groq.events:consume:SubscribeMessage"]
    assert message["payload"] == {"$ref": "#/components/schemas/AuditEvent"}
    protocols = {server["protocol"] for server in document["servers"].values()}
    assert protocols == {"redis", "kafka"}
    assert "acp:groq:insights:stream:publish" in document["channels"]
    assert "acp:groq_queue:consume" not in document["channels"]  # no stream is read
