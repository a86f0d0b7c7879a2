"""Tracing: decided once at start, and what the event path asks of the current span.

``start_tracing(settings)`` returns None unless an OTLP endpoint is configured
(``TracingSettings.tracing_enabled``): then nothing is built (no provider, processor,
exporter or thread) and the callers skip every span call, so an untraced worker pays
nothing per event. Otherwise it builds the SDK's ``TracerProvider`` with a
``BatchSpanProcessor`` and an OTLP/HTTP exporter; the SDK reads the other standard
variables itself (service name, resource attributes, headers, timeout, compression,
sampler, batch sizes). The provider is the worker's own, not the global one, so two
workers in one process (tests) never share spans.

The consume span is FastStream's (``RedisTelemetryMiddleware``, made current around the
handler); the event path adds attributes and events to whatever span is current, opens
the model call spans (``app/runtime/genai_spans.py``) and the write's span, and takes the
context to carry on to the InsightCreated entry. Nothing here records a prompt, an
answer, an exception message or an entry's fields: only ids, names, counts and reasons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from app.settings import Settings

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "Tracing",
    "add_trace_ids",
    "start_tracing",
]

DEFAULT_SERVICE_NAME = "acp-groq-worker"
_PROPAGATOR = TraceContextTextMapPropagator()
_SHUTDOWN_MILLIS = 5_000


class Tracing:
    """The worker's tracer, and the few span operations the event path uses."""

    def __init__(
        self, provider: TracerProvider, *, capture_content: bool, provider_name: str
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("acp_groq_worker")
        self.capture_content = capture_content  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_...
        self.provider_name = provider_name  # gen_ai.provider.name of the model calls

    @staticmethod
    def annotate(attributes: Mapping[str, AttributeValue]) -> None:
        """Set ``attributes`` on the current span (the event's consume span)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)

    @staticmethod
    def event(name: str, attributes: Mapping[str, AttributeValue]) -> None:
        """Add the span event ``name`` to the current span."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Iterator[Span]:
        """A child span of the current one; an exception marks it failed by its type
        only (``error.type``): no message, no traceback, which could hold event data."""
        with self.tracer.start_as_current_span(
            name, kind=kind, attributes=attributes, record_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                if span.is_recording():
                    span.set_attribute("error.type", type(exc).__name__)
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                raise

    @contextlib.contextmanager
    def resumed(
        self, fields: Mapping[Any, Any], name: str, attributes: Mapping[str, AttributeValue]
    ) -> Iterator[None]:
        """A consume span of the worker's own, child of the context in an entry's
        ``traceparent``/``tracestate`` fields (an event taken up later, out of FastStream's
        consume scope: a job of the scheduler)."""
        carrier = {}
        for key, value in fields.items():
            name_of = key.decode() if isinstance(key, bytes) else str(key)
            if name_of in ("traceparent", "tracestate"):
                carrier[name_of] = value.decode() if isinstance(value, bytes) else str(value)
        with self.tracer.start_as_current_span(
            name,
            context=_PROPAGATOR.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
        ):
            yield

    @staticmethod
    def carrier() -> dict[str, str]:
        """The current context as W3C fields (``traceparent``, ``tracestate``)."""
        fields: dict[str, str] = {}
        _PROPAGATOR.inject(fields)
        return fields

    @staticmethod
    def exemplar() -> dict[str, str] | None:
        """A histogram exemplar naming the current trace, when it is sampled."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return {"trace_id": format(context.trace_id, "032x")}

    def shutdown(self) -> None:
        """Export what is queued (bounded), then stop the processor's thread."""
        self.provider.force_flush(_SHUTDOWN_MILLIS)
        self.provider.shutdown()


def start_tracing(settings: Settings, *, version: str) -> Tracing | None:
    """The worker's tracing, or None when no OTLP endpoint is configured."""
    if not settings.tracing_enabled:
        return None
    resource = Resource.create({SERVICE_VERSION: version})
    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins; without it the
    # SDK says "unknown_service:python", which no operator wants to search for.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    # The endpoint as the settings read it (an env file too), by the specification's
    # rule: the traces URL as is, else the base URL + /v1/traces. The exporter reads
    # OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and the TLS files itself; the
    # batch processor reads OTEL_BSP_*.
    endpoint = settings.otel_exporter_otlp_traces_endpoint or (
        f"{str(settings.otel_exporter_otlp_endpoint).rstrip('/')}/v1/traces"
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracing(
        provider,
        capture_content=settings.capture_message_content,
        provider_name=settings.llm_provider.value.replace("-", "_"),
    )


def add_trace_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` of the current span, if any
    (installed only when tracing is on)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict
