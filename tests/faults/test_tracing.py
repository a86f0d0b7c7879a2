"""One trace from the gateway's span to the InsightCreated entry, from a real worker process.

``faststream run app:app`` with OTLP over HTTP pointed at the loopback receiver
(``tests/support/otlp_receiver.py``); events written by a plain client with a W3C
``traceparent`` field beside ``payload``; the spans read as the collector got them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from app.domain.keys import Keys
from tests.faults.harness import STREAM, FakeGroqProcess, RedisClient, Workers, wait_until
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.redis_server import free_port

pytestmark = pytest.mark.faults

FAKE_LATENCY = 0.0
WORKER_ENV = {"groq_max_attempts": 3}  # EVENT_ORDER=priority, the default
DEEP, FAST = "openai/gpt-oss-120b", "openai/gpt-oss-20b"
SECRET_HINT = "sk-live-do-not-trace"  # in raw_input: never sent, never traced


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def gateway_context(n: int) -> tuple[str, str, str]:
    """A gateway's trace id, span id and traceparent (sampled)."""
    trace_id = f"{n:032x}".replace("0", "a", 8)
    span_id = f"{n:016x}".replace("0", "b", 4)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def write(client: RedisClient, event_id: str, severity: str, traceparent: str, **extra) -> None:
    body = {
        "event_id": event_id,
        "tenant_id": "acme",
        "agent_id": "agent-a",
        "agent_name": "Billing Agent",
        "tool_name": "shell.exec",
        "decision": "deny",
        "severity": severity,
        "timestamp": 1_795_573_200,
        "raw_input": f"export KEY={SECRET_HINT}",
        **extra,
    }
    fields = {"payload": json.dumps(body), "traceparent": traceparent, "tracestate": "gw=1"}
    client.xadd(STREAM, fields)


def attribute_text(spans: list[ReceivedSpan]) -> str:
    """Every attribute and span-event attribute value, as one text to search."""
    values = []
    for span in spans:
        values += [repr(v) for v in span.attributes.values()]
        for event in span.events:
            values += [repr(v) for v in event.attributes.values()]
    return "\n".join(values)


def test_one_trace_from_the_gateway_span_to_the_insight_created_entry(
    workers: Workers, fake: FakeGroqProcess, client: RedisClient, receiver: OtlpReceiver
):
    """Gateway span → consume span → model call spans (a retry, a fallback) → the write →
    the InsightCreated entry's traceparent, one trace id; no prompt text in any attribute;
    a duplicate's admission and a dead letter's reason are on their spans; the event's log
    line names the trace."""
    worker = workers.start(
        "w-traced", **receiver.environment(OTEL_SERVICE_NAME="worker-under-test")
    )

    # The deep model fails twice (a retry), then the fast model answers (the fallback).
    fake.script(script=[{"status": 500}, {"status": 500}])
    trace_id, gateway_span, traceparent = gateway_context(1)
    write(client, "evt-traced-1", "high", traceparent)
    wait_until(lambda: client.exists(Keys.insight("evt-traced-1")), within=20, what="the insight")

    spans = receiver.wait_for(
        lambda s: any(x.name == "write_insight" and x.trace_id == trace_id for x in s), within=15
    )
    mine = [span for span in spans if span.trace_id == trace_id]
    assert {span.resource.get("service.name") for span in mine} == {"worker-under-test"}
    [consume] = [span for span in mine if span.name == f"{STREAM} process"]
    assert consume.parent_span_id == gateway_span  # joined the gateway's trace
    assert consume.attributes["messaging.consumer.group.name"] == "acp_insights_consumer_group"
    assert consume.attributes["acp.tenant_id"] == "acme"
    assert consume.attributes["acp.outcome"] == "enriched"
    assert re.fullmatch(r"\d+-\d+", consume.attributes["messaging.message.id"])
    assert [e.attributes["acp.admission"] for e in consume.events if e.name == "admission"] == [
        "admitted"
    ]

    calls = sorted(
        (span for span in mine if span.name.startswith("chat ")),
        key=lambda span: span.attributes["acp.attempt"],
    )
    assert [(c.name, c.attributes["acp.attempt"], c.attributes["acp.fallback"]) for c in calls] == [
        (f"chat {DEEP}", 1, False),
        (f"chat {DEEP}", 2, False),
        (f"chat {FAST}", 3, True),
    ]
    assert all(call.parent_span_id == consume.span_id for call in calls)
    assert [call.attributes.get("error.type") for call in calls] == ["server", "server", None]
    answered = calls[-1].attributes
    assert answered["gen_ai.provider.name"] == "groq"
    assert answered["gen_ai.operation.name"] == "chat"
    assert answered["gen_ai.request.model"] == FAST
    assert answered["gen_ai.response.model"] == FAST
    assert answered["gen_ai.usage.input_tokens"] > 0
    assert answered["gen_ai.usage.output_tokens"] > 0
    assert answered["gen_ai.response.finish_reasons"] == ("stop",)
    assert answered["acp.lane"] == "online"

    [write_span] = [span for span in mine if span.name == "write_insight"]
    assert write_span.parent_span_id == consume.span_id
    [(_, entry)] = client.xrange(Keys.INSIGHTS_STREAM)
    assert entry[b"traceparent"].decode() == f"00-{trace_id}-{write_span.span_id}-01"
    assert entry[b"tracestate"] == b"gw=1"
    assert json.loads(entry[b"payload"])["event_id"] == "evt-traced-1"

    # Nothing of the prompt, the event's raw fields or the answer in any attribute.
    prompt = fake.requests()[-1]["messages"]
    text = attribute_text(mine)
    for message in prompt:
        assert message["content"][:60] not in text
    assert "Billing Agent" not in text
    assert SECRET_HINT not in text
    assert "gen_ai.input.messages" not in {k for span in mine for k in span.attributes}

    # The same event again: the admission says duplicate, no model call, no write.
    trace_4, _, traceparent_4 = gateway_context(4)
    write(client, "evt-traced-1", "high", traceparent_4)
    spans = receiver.wait_for(
        lambda s: any(x.trace_id == trace_4 and "acp.outcome" in x.attributes for x in s),
        within=20,
    )
    [again] = [s for s in spans if s.trace_id == trace_4 and s.name == f"{STREAM} process"]
    assert again.attributes["acp.outcome"] == "duplicate"
    assert [e.attributes["acp.admission"] for e in again.events if e.name == "admission"] == [
        "duplicate"
    ]
    assert not [s for s in spans if s.trace_id == trace_4 and s.name != again.name]

    # A permanent error: a dead letter whose reason is on the event's span.
    fake.script(script=[{"status": 400, "code": "invalid_request_error"}])
    trace_2, _, traceparent_2 = gateway_context(2)
    write(client, "evt-traced-2", "low", traceparent_2)
    spans = receiver.wait_for(
        lambda s: any(x.trace_id == trace_2 and "acp.outcome" in x.attributes for x in s),
        within=20,
    )
    [consume_2] = [s for s in spans if s.trace_id == trace_2 and s.name == f"{STREAM} process"]
    assert consume_2.attributes["acp.outcome"] == "dead_lettered"
    assert consume_2.attributes["acp.dead_letter.reason"] == "llm_permanent"
    [letter] = [e for e in consume_2.events if e.name == "dead_letter"]
    assert letter.attributes["acp.dead_letter.reason"] == "llm_permanent"
    [failed] = [s for s in spans if s.trace_id == trace_2 and s.name == f"chat {FAST}"]
    assert failed.attributes["error.type"] == "bad_request"

    # An invalid entry: dead-lettered under its consume span, which records no input.
    trace_3, _, traceparent_3 = gateway_context(3)
    write(client, "evt-traced-3", "apocalyptic", traceparent_3)
    spans = receiver.wait_for(
        lambda s: any(x.trace_id == trace_3 and "acp.outcome" in x.attributes for x in s),
        within=20,
    )
    [consume_3] = [s for s in spans if s.trace_id == trace_3 and s.name == f"{STREAM} process"]
    assert consume_3.attributes["acp.dead_letter.reason"] == "invalid"
    assert "apocalyptic" not in attribute_text([consume_3])
    assert SECRET_HINT not in attribute_text([consume_3])

    # The canonical log line of the traced event names its trace.
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    [processed] = [
        line
        for line in lines
        if line.get("event") == "event_processed"
        and line.get("event_id") == "evt-traced-1"
        and line.get("outcome") == "enriched"
    ]
    assert processed["trace_id"] == trace_id
    assert processed["span_id"] == consume.span_id


def test_a_collector_that_is_down_loses_spans_not_events_and_the_stop_stays_bounded(
    workers: Workers, client: RedisClient
):
    """OTLP endpoint refusing connections: events are enriched all the same, and SIGTERM
    still exits 0 promptly (the last export is bounded)."""
    dead = f"http://127.0.0.1:{free_port()}"
    worker = workers.start(
        "w-no-collector", otel_exporter_otlp_endpoint=dead, otel_bsp_schedule_delay="50"
    )
    _, _, traceparent = gateway_context(5)
    write(client, "evt-untraced-5", "low", traceparent)
    wait_until(lambda: client.exists(Keys.insight("evt-untraced-5")), within=20, what="insight")
    began = time.monotonic()
    assert worker.terminate(within=60) == 0
    stopped = time.monotonic() - began
    assert stopped < 25, stopped
