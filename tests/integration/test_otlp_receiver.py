"""The loopback OTLP receiver decodes what the real OpenTelemetry SDK exports over HTTP.

Spans go through the SDK's own ``OTLPSpanExporter`` (protobuf over HTTP, with or without
compression) to ``tests/support/otlp_receiver.py``; what the receiver decodes must be what
was sent: names, ids and parents, kinds, attributes of every type, events, status, the
resource and the instrumentation scope. A child process configured only by the standard
``OTEL_*`` variables proves the receiver serves a worker started as a subprocess, and pins
what the SDK takes from those variables by itself (docs/tracing-notes.md).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import (
    Link,
    SpanKind,
    Status,
    StatusCode,
    format_span_id,
    format_trace_id,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.environment import without_settings
from tests.support.otlp_receiver import JSON, PROTOBUF, OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

CHAT_ATTRIBUTES: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "groq",
    "gen_ai.request.model": "llama-3.1-8b-instant",
    "gen_ai.usage.input_tokens": 412,
    "gen_ai.usage.cache_read.input_tokens": 0,
    "gen_ai.request.temperature": 0.2,
    "acp.fallback": False,
    "gen_ai.response.finish_reasons": ["stop"],
    "acp.attempts": [1, 2],
    "acp.weights": [0.5, 1.5],
    "acp.flags": [True, False],
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def provider_for(
    receiver: OtlpReceiver,
    *,
    compression: Compression = Compression.NoCompression,
    simple: bool = False,
    headers: dict[str, str] | None = None,
) -> TracerProvider:
    """A provider of its own (never the global one) exporting to the receiver."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "receiver-test", "service.version": "9.9"}),
        shutdown_on_exit=False,
    )
    exporter = OTLPSpanExporter(
        endpoint=receiver.traces_url, compression=compression, headers=headers, timeout=5
    )
    processor = (
        SimpleSpanProcessor(exporter)
        if simple
        else BatchSpanProcessor(exporter, schedule_delay_millis=50)
    )
    provider.add_span_processor(processor)
    return provider


def named(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    matches = [span for span in spans if span.name == name]
    assert len(matches) == 1, [span.name for span in spans]
    return matches[0]


@pytest.mark.parametrize(
    ("compression", "encoding"),
    [(Compression.NoCompression, ""), (Compression.Gzip, "gzip"), (Compression.Deflate, "deflate")],
    ids=["plain", "gzip", "deflate"],
)
def test_spans_arrive_as_sent(
    receiver: OtlpReceiver, compression: Compression, encoding: str
) -> None:
    provider = provider_for(receiver, compression=compression, headers={"x-test": "yes"})
    tracer = provider.get_tracer("acp.groq_worker", "0.1.0")
    with tracer.start_as_current_span(
        "process acp:groq_queue",
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "redis", "messaging.message.id": "1700000000000-0"},
    ) as consume:
        consume.add_event("admitted", {"acp.lane": "interactive", "acp.wait_ms": 12})
        with tracer.start_as_current_span(
            "chat llama-3.1-8b-instant", kind=SpanKind.CLIENT, attributes=CHAT_ATTRIBUTES
        ) as chat:
            chat.record_exception(TimeoutError("read timed out"))
            chat.set_attribute("error.type", "timeout")
            chat.set_status(Status(StatusCode.ERROR, "model call timed out"))
    sent_trace = format_trace_id(consume.get_span_context().trace_id)
    sent_consume = format_span_id(consume.get_span_context().span_id)
    sent_chat = format_span_id(chat.get_span_context().span_id)
    try:
        assert provider.force_flush(5_000)
        spans = receiver.wait_for(lambda spans: len(spans) >= 2, within=5)
    finally:
        provider.shutdown()

    received_consume = named(spans, "process acp:groq_queue")
    received_chat = named(spans, "chat llama-3.1-8b-instant")
    assert received_consume.trace_id == received_chat.trace_id == sent_trace
    assert received_consume.span_id == sent_consume
    assert received_consume.parent_span_id is None
    assert received_chat.span_id == sent_chat
    assert received_chat.parent_span_id == sent_consume
    assert received_consume.kind is SpanKind.CONSUMER
    assert received_chat.kind is SpanKind.CLIENT
    assert receiver.by_trace(sent_trace.upper()) == spans

    # Attribute values come back as the SDK holds them: lists as tuples.
    expected = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in CHAT_ATTRIBUTES.items()
    }
    assert received_chat.attributes == {**expected, "error.type": "timeout"}
    assert received_consume.attributes == {
        "messaging.system": "redis",
        "messaging.message.id": "1700000000000-0",
    }
    admitted = received_consume.event("admitted")
    assert admitted is not None
    assert admitted.attributes == {"acp.lane": "interactive", "acp.wait_ms": 12}
    exception = received_chat.event("exception")
    assert exception is not None
    assert exception.attributes["exception.type"] == "TimeoutError"
    assert exception.attributes["exception.message"] == "read timed out"
    assert received_chat.status_code is StatusCode.ERROR
    assert received_chat.status_message == "model call timed out"
    assert received_consume.status_code is StatusCode.UNSET
    assert received_chat.end_time_unix_nano >= received_chat.start_time_unix_nano > 0

    assert received_chat.scope_name == "acp.groq_worker"
    assert received_chat.scope_version == "0.1.0"
    assert received_chat.resource["service.name"] == "receiver-test"
    assert received_chat.resource["service.version"] == "9.9"
    assert received_chat.resource["telemetry.sdk.language"] == "python"

    (request,) = receiver.requests()
    assert request.path == "/v1/traces"
    assert request.status == 200
    assert request.content_type == PROTOBUF
    assert request.content_encoding == encoding
    assert request.span_count == 2
    assert request.headers["x-test"] == "yes"


def test_a_remote_parent_and_links_are_kept(receiver: OtlpReceiver) -> None:
    """A span under a W3C ``traceparent`` (as a gateway sends it) joins that trace."""
    provider = provider_for(receiver, simple=True)
    tracer = provider.get_tracer("acp.groq_worker")
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": TRACEPARENT, "tracestate": "acme=1"}
    )
    link_context = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    )
    linked = Link(
        next(iter(link_context.values())).get_span_context(),  # type: ignore[attr-defined]
        {"acp.why": "batch"},
    )
    with tracer.start_as_current_span("process acp:groq_queue", context=parent, links=[linked]):
        pass
    try:
        (span,) = receiver.wait_for(lambda spans: len(spans) == 1, within=5)
    finally:
        provider.shutdown()
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "b7ad6b7169203331"
    assert span.trace_state == "acme=1"
    (link,) = span.links
    assert (link.trace_id, link.span_id) == ("1" * 32, "2" * 16)
    assert link.attributes == {"acp.why": "batch"}


async def test_an_async_test_waits_without_blocking_its_loop(receiver: OtlpReceiver) -> None:
    """``SimpleSpanProcessor`` exports inside ``span.end()`` on the loop's thread: the
    receiver answers from its own thread, and ``wait_for_async`` lets the loop run."""
    provider = provider_for(receiver, simple=True)
    tracer = provider.get_tracer("acp.groq_worker")

    async def handle(number: int) -> None:
        with tracer.start_as_current_span(f"event {number}"):
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(handle(number) for number in range(5)))
        spans = await receiver.wait_for_async(lambda spans: len(spans) == 5, within=5)
    finally:
        provider.shutdown()
    assert sorted(span.name for span in spans) == [f"event {n}" for n in range(5)]
    assert len({span.trace_id for span in spans}) == 5  # concurrent tasks, separate traces
    receiver.clear()
    assert receiver.spans() == []
    assert receiver.requests() == []


def test_a_scripted_failure_is_retried_by_the_exporter(receiver: OtlpReceiver) -> None:
    receiver.fail_next(1, status=503, retry_after=0)
    provider = provider_for(receiver, simple=True)
    with provider.get_tracer("acp.groq_worker").start_as_current_span("after a 503"):
        pass
    try:
        receiver.wait_for(lambda spans: len(spans) == 1, within=5)
    finally:
        provider.shutdown()
    assert [request.status for request in receiver.requests()] == [503, 200]
    assert receiver.requests()[0].span_count == 0


def post(
    receiver: OtlpReceiver, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(receiver.endpoint + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_answers_follow_the_otlp_http_specification(receiver: OtlpReceiver) -> None:
    protobuf = {"Content-Type": PROTOBUF}
    status, content_type, body = post(receiver, "/v1/traces", b"", protobuf)
    assert (status, content_type) == (200, PROTOBUF)  # an empty request is a success
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")

    status, content_type, body = post(receiver, "/v1/traces", b"\xff\xff\xff", protobuf)
    assert (status, content_type) == (400, PROTOBUF)
    assert "ExportTraceServiceRequest" in status_pb2.Status.FromString(body).message

    status, _, _ = post(receiver, "/v1/traces", b"{}", {"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = post(receiver, "/v1/metrics", b"", protobuf)
    assert status == 404
    status, _, _ = post(
        receiver, "/v1/traces", gzip.compress(b"")[:5], {**protobuf, "Content-Encoding": "gzip"}
    )
    assert status == 400

    small = OtlpReceiver(max_body_bytes=1000).start()
    try:
        bomb = gzip.compress(b"\x00" * 5000)
        assert len(bomb) < 1000
        status, _, _ = post(small, "/v1/traces", bomb, {**protobuf, "Content-Encoding": "gzip"})
        assert status == 413
    finally:
        small.stop()

    assert [request.status for request in receiver.requests()] == [200, 400, 415, 404, 400]
    assert receiver.spans() == []


def test_the_otlp_json_encoding_is_decoded(receiver: OtlpReceiver) -> None:
    """OTLP/JSON: hex ids (not protobuf's base64), integer enums, lowerCamelCase keys."""
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "gateway"},
                        "spans": [
                            {
                                "traceId": "0AF7651916CD43DD8448EB211C80319C",
                                "spanId": "b7ad6b7169203331",
                                "parentSpanId": "00f067aa0ba902b7",
                                "name": "send acp:groq_queue",
                                "kind": 4,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "3"}},
                                    {
                                        "key": "tags",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                                    },
                                ],
                                "status": {"code": 1},
                                "someFutureField": True,
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, content_type, body = post(
        receiver, "/v1/traces", json.dumps(document).encode(), {"Content-Type": JSON}
    )
    assert (status, content_type) == (200, JSON)
    assert json.loads(body) == {}
    (span,) = receiver.spans()
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "00f067aa0ba902b7"
    assert span.kind is SpanKind.PRODUCER
    assert span.attributes == {"n": 3, "tags": ("a",)}
    assert span.status_code is StatusCode.OK
    assert span.resource == {"service.name": "gw"}
    assert span.duration_seconds == pytest.approx(0.001)


# A process that configures tracing the way the worker will: no arguments, only OTEL_*.
CHILD = """
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
with provider.get_tracer("child").start_as_current_span("from the environment"):
    pass
provider.shutdown()
"""


def run_child(environment: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**without_settings(), **environment},
        check=True,
        timeout=60,
        capture_output=True,
    )


def test_a_child_process_exports_by_the_standard_environment(receiver: OtlpReceiver) -> None:
    run_child(
        receiver.environment(
            OTEL_SERVICE_NAME="acp-groq-worker",
            OTEL_RESOURCE_ATTRIBUTES="service.name=overridden,deployment.environment.name=ci",
            OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme,authorization=Bearer%20s3cret",
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        )
    )
    (span,) = receiver.spans()  # the provider's shutdown flushed before the child exited
    assert span.name == "from the environment"
    assert span.resource["service.name"] == "acp-groq-worker"  # OTEL_SERVICE_NAME wins
    assert span.resource["deployment.environment.name"] == "ci"
    (request,) = receiver.requests()
    assert request.path == "/v1/traces"  # appended to the generic endpoint
    assert request.content_encoding == "gzip"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["authorization"] == "Bearer s3cret"  # values are URL-decoded


def test_the_signal_endpoint_is_used_as_given_and_sdk_disabled_exports_nothing(
    receiver: OtlpReceiver,
) -> None:
    run_child({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/collector/traces"})
    (request,) = receiver.requests()
    assert request.path == "/collector/traces"  # no /v1/traces appended
    assert request.status == 404

    receiver.clear()
    run_child({**receiver.environment(), "OTEL_SDK_DISABLED": "true"})
    assert receiver.requests() == []
