"""A FastStream publisher's trace context (message headers) is joined like a gateway's
fields; an entry without one starts a trace of its own. In process, exported over OTLP/HTTP
to the loopback receiver."""

from __future__ import annotations

import pytest

from app.bootstrap import build_worker
from app.domain.keys import Keys
from tests.conftest import broker_for, running
from tests.integration.test_client import valid_event, wait_for_outcomes
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

STREAM = "acp:groq_queue"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def test_faststream_headers_carry_the_trace_and_an_entry_without_starts_one(
    redis, make_settings
):
    """A FastStream message's `traceparent` header parents the worker's spans; an invalid
    entry without one gets a trace of its own, dead-lettered without an error status."""
    settings = make_settings(llm_provider="offline", event_order="fifo")
    with OtlpReceiver() as receiver:
        traced = settings.model_copy(update={"otel_exporter_otlp_endpoint": receiver.endpoint})
        worker = build_worker(traced, configure_logs=False)
        assert worker.tracing is not None
        async with running(worker.app), broker_for(settings) as publisher:
            await publisher.publish(
                valid_event(event_id="evt-hdr-1"),
                stream=STREAM,
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
            )
            await redis.xadd(STREAM, {"payload": repr(valid_event(event_id="evt-hdr-2"))})
            await wait_for_outcomes(worker.metrics, {"enriched": 1, "dead_lettered": 1})
        # leaving `running` shut the provider down: every span is exported by now
        spans = receiver.spans()

    [consume] = [s for s in spans if s.name == f"{STREAM} process" and s.trace_id == TRACE_ID]
    assert consume.parent_span_id == PARENT
    assert consume.attributes["acp.event_id"] == "evt-hdr-1"
    names = {s.name for s in spans if s.trace_id == TRACE_ID}
    assert {f"{STREAM} process", "write_insight"} <= names
    assert any(name.startswith("chat ") for name in names)
    [(_, entry)] = await redis.xrange(Keys.INSIGHTS_STREAM)
    assert entry[b"traceparent"].decode().startswith(f"00-{TRACE_ID}-")

    # The second entry (not JSON: dead-lettered) came without a context: a trace of its own.
    [other] = [s for s in spans if s.name == f"{STREAM} process" and s.trace_id != TRACE_ID]
    assert other.attributes["acp.dead_letter.reason"] == "invalid"
    assert other.status_code.name != "ERROR"  # an invalid entry is an outcome, not a failure
    roots = [s for s in spans if s.trace_id == other.trace_id and s.parent_span_id is None]
    assert [root.name for root in roots] == [f"{STREAM} create"]
