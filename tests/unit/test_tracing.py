"""Tracing: off means nothing built; on, the model call spans follow the GenAI conventions
and hold no content unless asked, and then only scrubbed content."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.openmetrics.exposition import generate_latest

from app.bootstrap import build_worker
from app.domain.errors import TransientLLMError
from app.runtime.logs import configure_logging
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.runtime.tracing import Tracing, add_trace_ids, start_tracing
from app.service.model_calls import ModelCaller
from app.service.reports import Reports
from app.settings import SettingsError, load_settings
from tests.support.environment import settings_from
from tests.support.fakes import ScriptedLLM

FAST, DEEP = "openai/gpt-oss-20b", "openai/gpt-oss-120b"
KEY = "gsk_TESTfake0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"


def in_memory(*, capture_content: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, capture_content=capture_content, provider_name="groq"), exporter


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def caller(llm: ScriptedLLM, tracing: Tracing, **overrides: object) -> ModelCaller:
    settings = settings_from(groq_api_key=KEY, **overrides)

    async def sleep(seconds: float) -> None:
        return None

    return ModelCaller(
        settings, llm=llm, metrics=Metrics(), state=WorkerState(), sleep=sleep, tracing=tracing
    )


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"otel_exporter_otlp_endpoint": "  "},
        {"otel_exporter_otlp_endpoint": "http://collector:4318", "otel_sdk_disabled": True},
        {"otel_exporter_otlp_endpoint": "http://collector:4318", "otel_traces_exporter": "none"},
    ],
)
def test_without_an_endpoint_no_provider_exporter_or_middleware_is_built(environment):
    """Tracing unset (or turned off): no tracer provider, no exporter, no telemetry
    middleware on the subscriber, no trace ids processor in the logs."""
    settings = settings_from(groq_api_key=KEY, **environment)
    assert start_tracing(settings, version="0") is None
    worker = build_worker(settings, configure_logs=False)
    assert worker.tracing is None
    assert worker.routes.subscriber is not None  # INBOUND=redis
    middlewares = worker.routes.subscriber._broker_middlewares
    assert not any(isinstance(m, RedisTelemetryMiddleware) for m in middlewares)
    configure_logging(trace_ids=False)
    assert add_trace_ids not in structlog.get_config()["processors"]


def test_with_an_endpoint_the_middleware_and_the_exporter_are_built():
    """OTEL_EXPORTER_OTLP_ENDPOINT set: the SDK's provider exports to {endpoint}/v1/traces,
    FastStream's telemetry middleware wraps the subscriber, log lines get trace ids."""
    settings = settings_from(groq_api_key=KEY, otel_exporter_otlp_endpoint="http://c:4318/")
    worker = build_worker(settings, configure_logs=False)
    try:
        assert worker.tracing is not None
        [processor] = worker.tracing.provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        exporter: Any = processor.span_exporter
        assert exporter._endpoint == "http://c:4318/v1/traces"
        assert worker.tracing.provider.resource.attributes["service.name"] == "acp-groq-worker"
        assert worker.routes.subscriber is not None  # INBOUND=redis
        middlewares = worker.routes.subscriber._broker_middlewares
        assert any(isinstance(m, RedisTelemetryMiddleware) for m in middlewares)
        configure_logging(trace_ids=True)
        assert add_trace_ids in structlog.get_config()["processors"]
    finally:
        worker.tracing.shutdown() if worker.tracing else None
        configure_logging()


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_an_unsupported_protocol_is_refused_at_start(protocol, monkeypatch):
    """Only OTLP over HTTP with protobuf is exported; another protocol stops the worker."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        load_settings(_env_file=None)


def test_a_retry_and_a_fallback_are_separate_chat_spans_with_genai_attributes():
    """Deep fails twice (transient), the fast model answers: three `chat {model}` spans,
    numbered, the last a fallback with the usage of the answer; no content recorded."""
    tracing, exporter = in_memory()
    llm = ScriptedLLM([TransientLLMError("server", "503"), TransientLLMError("server", "503")])
    answer = asyncio.run(caller(llm, tracing, groq_max_attempts=3).answer(DEEP, "sys", "usr"))
    assert answer.fallback
    spans = exporter.get_finished_spans()
    assert [(s.name, attrs(s)["acp.attempt"], attrs(s)["acp.fallback"]) for s in spans] == [
        (f"chat {DEEP}", 1, False),
        (f"chat {DEEP}", 2, False),
        (f"chat {FAST}", 3, True),
    ]
    assert all(span.kind is SpanKind.CLIENT for span in spans)
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attrs(spans[0])["error.type"] == "server"
    assert spans[0].events == ()  # no exception event: its message is not for a span
    answered = attrs(spans[-1])
    assert answered["gen_ai.operation.name"] == "chat"
    assert answered["gen_ai.provider.name"] == "groq"
    assert answered["gen_ai.request.model"] == FAST
    assert answered["gen_ai.response.model"] == FAST
    assert (answered["gen_ai.usage.input_tokens"], answered["gen_ai.usage.output_tokens"]) == (
        10,
        5,
    )
    assert not any(name.startswith("gen_ai.input") or "messages" in name for name in answered)
    assert "sys" not in answered.values()
    assert "usr" not in answered.values()


def test_opt_in_content_is_the_prompt_as_sent_and_the_answer_redacted():
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: the messages the model got,
    exactly, and its answer with a credential it echoed redacted."""
    tracing, exporter = in_memory(capture_content=True)
    leaked = json.dumps({"summary": f"key {KEY}", "risk": "high", "recommendation": "rotate"})
    llm = ScriptedLLM([leaked])
    system, user = "You are an analyst.", "Agent: billing. Decision: deny. [REDACTED:email]"
    asyncio.run(caller(llm, tracing).answer(FAST, system, user))
    [span] = exporter.get_finished_spans()
    assert json.loads(attrs(span)["gen_ai.system_instructions"]) == [
        {"type": "text", "content": system}
    ]
    assert json.loads(attrs(span)["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": user}]}
    ]
    [output] = json.loads(attrs(span)["gen_ai.output.messages"])
    assert output["role"] == "assistant"
    assert KEY not in attrs(span)["gen_ai.output.messages"]
    assert "rotate" in output["parts"][0]["content"]


def test_capture_setting_accepts_the_contrib_and_util_genai_spellings():
    for value, on in (("true", True), ("TRUE", True), ("SPAN_ONLY", True), ("false", False)):
        settings = settings_from(otel_instrumentation_genai_capture_message_content=value)
        assert settings.capture_message_content is on, value


def test_the_latency_exemplar_names_a_sampled_trace_in_openmetrics():
    """Inside a sampled span the histogram observation carries the trace id, shown in the
    OpenMetrics exposition; outside one there is none."""
    tracing, _ = in_memory()
    metrics = Metrics()
    with tracing.tracer.start_as_current_span("process") as span:
        exemplar = tracing.exemplar()
        metrics.event_latency.labels(model=FAST).observe(0.2, exemplar)
    assert tracing.exemplar() is None
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert exemplar == {"trace_id": trace_id}
    exposition = generate_latest(metrics.registry).decode()  # type: ignore[no-untyped-call]
    assert f'# {{trace_id="{trace_id}"}} 0.2' in exposition


def test_a_scheduled_event_resumes_the_trace_of_its_entry_fields():
    """A job of the scheduler, taken up out of FastStream's consume scope, gets a consume
    span of its own in the trace of its entry's `traceparent` (bytes or text fields)."""
    tracing, exporter = in_memory()
    reports = Reports(
        Metrics(), tracing=tracing, span_attributes={"messaging.destination.name": "in"}
    )
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for fields in ({b"traceparent": parent.encode()}, {"traceparent": parent}):
        with reports.resumed(fields), reports.about("evt-1", "acme", "1-0"):
            pass
    for span in exporter.get_finished_spans():
        assert span.name == "in process"
        assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
        assert attrs(span)["acp.scheduled"] is True
        assert attrs(span)["acp.tenant_id"] == "acme"
    assert len(exporter.get_finished_spans()) == 2
