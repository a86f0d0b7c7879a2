"""Tracing: OpenTelemetry's standard variables, the few the worker itself must read.

The SDK reads the rest by itself when the worker builds it (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``,
``..._COMPRESSION``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``). What it does not
read is whether tracing is on at all, and which protocol: those are decided here, once at
start (docs/tracing-notes.md, section 3). Tracing is on when an OTLP endpoint is set and
neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` says otherwise.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

__all__ = ["TracingSettings"]

# The protocols the worker exports with: OTLP over HTTP, protobuf bodies (the Python SDK
# has no http/json exporter; grpc would need grpcio).
_PROTOCOLS = frozenset({"http/protobuf"})
# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT values that mean "record content":
# the contrib instrumentations' boolean, and opentelemetry-util-genai's span modes.
_CAPTURE_ON = frozenset({"true", "span_only", "span_and_event"})


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing (off unless an OTLP endpoint is set)."""

    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP base URL (…/v1/traces is appended); turns tracing on."
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL, used as is; turns tracing on."
    )
    otel_exporter_otlp_protocol: str | None = Field(
        None, description="http/protobuf (the default, and the only protocol supported)."
    )
    otel_exporter_otlp_traces_protocol: str | None = Field(
        None, description="As OTEL_EXPORTER_OTLP_PROTOCOL, for traces only."
    )
    otel_traces_exporter: str | None = Field(
        None, description="otlp (default) or none (tracing off whatever the endpoint)."
    )
    otel_sdk_disabled: bool = Field(False, description="true: tracing off.")
    otel_instrumentation_genai_capture_message_content: str = Field(
        "false",
        description="true: model call spans record the prompt as sent (scrubbed) and the "
        "answer (credentials redacted). Off by default.",
    )

    @field_validator(
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "otel_exporter_otlp_protocol",
        "otel_exporter_otlp_traces_protocol",
        "otel_traces_exporter",
        mode="before",
    )
    @classmethod
    def _blank(cls, value: object) -> object:
        return _blank_is_none(value)

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value

    @field_validator("otel_exporter_otlp_protocol", "otel_exporter_otlp_traces_protocol")
    @classmethod
    def _protocol(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in _PROTOCOLS:
            raise ValueError("only http/protobuf is supported (grpc and http/json are not)")
        return value

    @field_validator("otel_traces_exporter")
    @classmethod
    def _exporter(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in {"otlp", "none"}:
            raise ValueError("must be otlp or none")
        return value

    @property
    def tracing_enabled(self) -> bool:
        """Export spans: an endpoint is set and nothing turns tracing off."""
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        exporter = (self.otel_traces_exporter or "otlp").strip().lower()
        return endpoint is not None and exporter == "otlp" and not self.otel_sdk_disabled

    @property
    def capture_message_content(self) -> bool:
        """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT asks for prompts and answers."""
        value = self.otel_instrumentation_genai_capture_message_content
        return value.strip().lower() in _CAPTURE_ON
