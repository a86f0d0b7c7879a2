"""The AsyncAPI document: committed as generated, complete, and its examples accepted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.redis.parser import BinaryMessageFormatV1
from faststream.redis.parser.parsers import RedisStreamParser, SimpleParserConfig
from pydantic import ValidationError

from app.bootstrap import package_version
from app.cli import main
from app.cli.asyncapi import generate
from app.cli.asyncapi_html import render_html
from app.domain.errors import InvalidEvent
from app.domain.events import AuditEvent, Finding, describe_validation_error
from app.domain.insight_stream import InsightCreatedEntry
from app.domain.insights import DeadLetter, DeadLetterReason, InsightCreated
from app.domain.keys import Keys
from app.handlers.wire import decode_entry, entry_parser
from app.settings import Settings
from tests.support.environment import without_settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "asyncapi"
MAX_EVENT_BYTES: int = Settings.model_fields["max_event_bytes"].default

# Settings as unlike the defaults as a deployment gets: none of them may reach the document.
ODD_ENVIRONMENT = {
    "LLM_PROVIDER": "offline",
    "WORKER_ID": "some-host-4242",
    "REDIS_URL": "redis://elsewhere.internal:6380/3",
    "INSIGHT_STREAM": "acp:groq_events",
    "INSIGHT_GROUP": "another_group",
    "WORKER_CONCURRENCY": "3",
    "MAX_EVENT_BYTES": "4096",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((COMMITTED / "asyncapi.json").read_text(encoding="utf-8"))
    return loaded


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def payload_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Channel address -> the payload schema of its message."""
    schemas = {}
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            schemas[channel["address"]] = resolve(document, resolve(document, message)["payload"])
    return schemas


async def read_as_the_worker(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry through the worker's own parser and decoder (what the handler gets)."""
    raw = {
        "type": "stream",
        "channel": "acp:groq_queue",
        "data": fields,
        "message_ids": [b"1795573200000-0"],
    }
    default_parser = RedisStreamParser(SimpleParserConfig(BinaryMessageFormatV1)).parse_message
    message = await entry_parser(MAX_EVENT_BYTES)(raw, default_parser)

    async def no_default_decoder(message: Any) -> Any:
        raise AssertionError("the worker's decoder never falls back to FastStream's")

    body: dict[str, Any] = await decode_entry(message, no_default_decoder)
    return body


# -- the committed files are what the code generates ---------------------------------------


@pytest.mark.parametrize(("fmt", "flags"), [("yaml", ["--yaml"]), ("json", [])])
def test_committed_document_is_what_faststream_docs_gen_writes_in_any_environment(
    tmp_path, fmt, flags
):
    """`faststream docs gen app:app`, run with odd settings, writes the committed file."""
    out = tmp_path / f"asyncapi.{fmt}"
    result = subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", *flags, "app:app", "-o", str(out)],
        cwd=ROOT,
        env={**without_settings(os.environ), **ODD_ENVIRONMENT},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (COMMITTED / f"asyncapi.{fmt}").read_bytes()


def test_check_passes_on_the_committed_document(capsys):
    """`groq-worker asyncapi --check` exits 0 when both committed files match the code."""
    assert main(["asyncapi", "--check", "--dir", str(COMMITTED)]) == 0
    assert "match the code" in capsys.readouterr().out


def test_check_fails_with_a_unified_diff_when_the_document_drifts(tmp_path, capsys):
    """An edited YAML and a missing JSON make --check exit 1, showing the diff and the fix."""
    committed = (COMMITTED / "asyncapi.yaml").read_text(encoding="utf-8")
    (tmp_path / "asyncapi.yaml").write_text(
        committed.replace("title: acp-groq-worker", "title: stale-worker"), encoding="utf-8"
    )
    assert main(["asyncapi", "--check", "--dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"--- {tmp_path}/asyncapi.yaml (committed)" in captured.out
    assert "-  title: stale-worker" in captured.out
    assert "+  title: acp-groq-worker" in captured.out
    assert f"{tmp_path}/asyncapi.json: missing" in captured.err
    assert f"groq-worker asyncapi -o {tmp_path}/asyncapi.yaml" in captured.err


def test_the_command_prints_and_writes_the_document_in_either_format(tmp_path, capsys):
    """No flag prints the YAML; -o FILE.json writes the JSON; both byte for byte."""
    assert main(["asyncapi"]) == 0
    assert capsys.readouterr().out == (COMMITTED / "asyncapi.yaml").read_text(encoding="utf-8")
    out = tmp_path / "doc.json"
    assert main(["asyncapi", "-o", str(out)]) == 0
    assert out.read_bytes() == (COMMITTED / "asyncapi.json").read_bytes()
    assert main(["asyncapi", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text(encoding="utf-8"))


def test_yaml_and_json_documents_say_the_same_thing(document):
    """The two committed files are one document in two syntaxes."""
    committed_yaml = yaml.safe_load((COMMITTED / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert committed_yaml == document
    assert json.loads(generate("json")) == document


# -- what the document holds ---------------------------------------------------------------


def test_document_names_the_worker_the_redis_server_and_every_channel(document):
    """Title, package version, server, and the inbound, outbound and dead-letter channels."""
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "acp-groq-worker"
    assert document["info"]["version"] == package_version()
    assert "XADD acp:groq_queue * payload" in document["info"]["description"]
    assert [server["protocol"] for server in document["servers"].values()] == ["redis"]

    channels = {c["address"]: c for c in document["channels"].values()}
    assert set(channels) == {"acp:groq_queue", Keys.INSIGHTS_STREAM, Keys.DLQ}
    inbound = channels["acp:groq_queue"]["bindings"]["redis"]
    assert inbound["method"] == "xreadgroup"
    assert inbound["groupName"] == "acp_insights_consumer_group"
    assert inbound["consumerName"] == "${WORKER_ID}"
    assert channels[Keys.INSIGHTS_STREAM]["bindings"]["redis"]["method"] == "xadd"
    assert channels[Keys.DLQ]["bindings"]["redis"]["method"] == "lpush"

    actions = {
        resolve(document, op["channel"])["address"]: op["action"]
        for op in document["operations"].values()
    }
    assert actions == {"acp:groq_queue": "receive", Keys.INSIGHTS_STREAM: "send", Keys.DLQ: "send"}
    titles = {address: schema["title"] for address, schema in payload_schemas(document).items()}
    assert titles == {
        "acp:groq_queue": "AuditEvent",
        Keys.INSIGHTS_STREAM: "InsightCreatedEntry",
        Keys.DLQ: "DeadLetter",
    }


def test_inbound_channel_says_how_to_write_an_event_and_what_becomes_of_it(document):
    """The gateway's wire format, every outcome and every dead-letter reason are written down."""
    channel = next(c for c in document["channels"].values() if c["address"] == "acp:groq_queue")
    text = channel["description"]
    assert "XADD acp:groq_queue * payload '" in text
    assert "app.client.publish_event(redis, event)" in text
    for outcome in ("enriched", "duplicate", "rate_limited", "dead_lettered"):
        assert f"`{outcome}`" in text
    for reason in DeadLetterReason:
        assert f"`{reason.value}`" in text
    for key in ("acp:groq:insight:{event_id}", "acp:groq:dlq", "acp:groq:rate_limit:{tenant_id}"):
        assert key in text


def test_document_says_the_order_the_cap_and_which_keys_are_internal(document):
    """A gateway learns that an acknowledged entry may still be waiting (priority order),
    that the DLQ is capped, and that the scheduler's keys are not its to read."""
    inbound = next(c for c in document["channels"].values() if c["address"] == "acp:groq_queue")
    assert "EVENT_ORDER=priority" in inbound["description"]
    assert "does not\nmean its insight is written" in inbound["description"]
    dlq = next(c for c in document["channels"].values() if c["address"] == Keys.DLQ)
    assert "DLQ_MAX_ENTRIES" in dlq["description"]
    assert "acp_groq_dlq_dropped_total" in dlq["description"]
    assert f"`{Keys.SCHED}*`" in document["info"]["description"]
    assert "internal" in document["info"]["description"]


def test_every_schema_and_every_field_has_a_description_and_examples(document):
    """Each payload field (nested types too) is described and has at least one example."""
    undocumented = []
    for name, schema in document["components"]["schemas"].items():
        if not schema.get("description"):
            undocumented.append(f"{name}: no description")
        for field, spec in schema.get("properties", {}).items():
            if not spec.get("description"):
                undocumented.append(f"{name}.{field}: no description")
            if not spec.get("examples"):
                undocumented.append(f"{name}.{field}: no examples")
    assert undocumented == []


def test_each_message_has_an_example_with_every_field(document):
    """A gateway engineer sees at least one complete payload per message."""
    for address, schema in payload_schemas(document).items():
        fields = set(schema["properties"])
        assert any(fields <= set(example) for example in schema["examples"]), address


# -- every example is accepted by the worker -----------------------------------------------


def inbound_examples(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The AuditEvent examples, plus the events of the XADD lines in the descriptions."""
    examples = list(payload_schemas(document)["acp:groq_queue"]["examples"])
    texts = [document["info"]["description"]]
    texts += [channel["description"] for channel in document["channels"].values()]
    for text in texts:
        for line in re.findall(r"XADD acp:groq_queue \* payload '(\{.*\})'", text):
            examples.append(json.loads(line))
    return examples


async def test_inbound_examples_pass_the_worker_parser_decoder_and_model(document):
    """Each inbound example, written as the gateway writes it, is read as a valid event."""
    examples = inbound_examples(document)
    assert len(examples) >= 3  # two in the schema, one in the channel's description
    for example in examples:
        body = await read_as_the_worker({b"payload": json.dumps(example).encode()})
        event = AuditEvent.model_validate(body)
        assert event.event_id == example["event_id"]


def test_every_field_example_of_an_event_is_a_valid_value_of_its_field(document):
    """Each field's examples, put in a full example, still make a valid event or finding."""
    schemas = document["components"]["schemas"]
    full = next(e for e in schemas["AuditEvent"]["examples"] if "findings" in e)
    for field, spec in schemas["AuditEvent"]["properties"].items():
        for value in spec["examples"]:
            AuditEvent.model_validate({**full, field: value})
    finding = next(f for f in full["findings"] if isinstance(f, dict))
    for field, spec in schemas["Finding"]["properties"].items():
        for value in spec["examples"]:
            Finding.model_validate({**finding, field: value})


def test_outbound_examples_are_what_the_worker_publishes(document):
    """InsightCreated entries: plain fields, `payload` a JSON InsightCreated that points at
    the insight key of its event, the trace fields optional."""
    schema = payload_schemas(document)[Keys.INSIGHTS_STREAM]
    assert schema["properties"]["payload"]["type"] == "string"
    assert schema["properties"]["payload"]["contentMediaType"] == "application/json"
    assert schema["required"] == ["payload"]
    for example in schema["examples"]:
        entry = InsightCreatedEntry.model_validate(example)
        assert entry.payload.insight_key == Keys.insight(entry.payload.event_id)
        assert set(example) <= {"payload", "traceparent", "tracestate"}
    created = document["components"]["schemas"]["InsightCreated"]
    full = created["examples"][0]
    for field, spec in created["properties"].items():
        for value in spec["examples"]:
            InsightCreated.model_validate({**full, field: value})


async def test_dead_letter_examples_are_what_the_worker_writes(document):
    """DeadLetter examples validate; an `invalid` one is refused by the worker with its error."""
    schema = payload_schemas(document)[Keys.DLQ]
    reasons = set()
    for example in schema["examples"]:
        letter = DeadLetter.model_validate(example)
        reasons.add(letter.reason)
        if letter.truncated:  # an entry over the limit: only excerpts, its size and hash
            assert (letter.payload, letter.entry_bytes) == (None, example["entry_bytes"])
            assert letter.entry_sha256 is not None
            continue
        # the entry as the gateway wrote it: the event in `payload_field`, the other fields
        assert letter.payload_field == "payload"
        assert letter.payload is not None
        fields = {k.encode(): v.encode() for k, v in letter.fields.items()}
        fields[b"payload"] = letter.payload.encode()
        if letter.reason is DeadLetterReason.INVALID:
            body = await read_as_the_worker(fields)
            with pytest.raises(ValidationError) as refused:
                AuditEvent.model_validate(body)
            assert describe_validation_error(refused.value) == letter.error
        else:
            AuditEvent.model_validate(await read_as_the_worker(fields))
            assert letter.payload is not None
            AuditEvent.model_validate_json(letter.payload)
    assert DeadLetterReason.INVALID in reasons
    full = schema["examples"][0]
    for field, spec in schema["properties"].items():
        for value in spec["examples"]:
            DeadLetter.model_validate({**full, field: value})


async def test_an_entry_without_payload_is_invalid_for_the_worker():
    """The document's rule 'one field named payload' is the parser's rule too."""
    with pytest.raises(InvalidEvent, match="no 'payload' field"):
        await read_as_the_worker({b"event": b"{}"})


# -- the HTML page ---------------------------------------------------------------------------


def test_html_page_is_self_contained_and_shows_every_channel_field_and_example(document, tmp_path):
    """`--html FILE` writes one page with no script or remote asset, holding the contract."""
    out = tmp_path / "asyncapi.html"
    assert main(["asyncapi", "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page == render_html(document, source=generate("yaml"))
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page
    for address, schema in payload_schemas(document).items():
        assert f"<code>{address}</code>" in page
        for field in schema["properties"]:
            assert f"<code>{field}</code>" in page
        for example in schema["examples"]:
            event_id = example.get("event_id")
            if address == Keys.INSIGHTS_STREAM:  # inside the JSON of the entry's `payload`
                event_id = json.loads(example["payload"])["event_id"]
            assert event_id is None or event_id in page
    assert "XADD acp:groq_queue * payload" in page
