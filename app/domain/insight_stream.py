"""An entry of ``acp:groq:insights:stream`` as it is on the wire: plain fields, no framing.

Each insight written is announced by one stream entry whose fields any Redis client reads
with ``XREAD``/``XRANGE``:

* ``payload``: the ``InsightCreated`` JSON (UTF-8), ``JSON.parse``-able as is;
* ``traceparent`` and ``tracestate``: the W3C trace context of the write that announced
  it, only when the worker traces (``OTEL_EXPORTER_OTLP_ENDPOINT``); its flags say whether
  the trace is sampled.

The same shape as the inbound entries a gateway writes (``payload`` beside the trace
fields). A FastStream subscriber receives an entry without ``__data__`` as the JSON of its
field map, which ``InsightCreatedEntry`` validates: its ``payload`` is parsed into the
``InsightCreated`` model.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, Json

from app.domain.insights import InsightCreated

__all__ = [
    "PAYLOAD_FIELD",
    "TRACE_FIELDS",
    "InsightCreatedEntry",
    "insight_created_fields",
]

PAYLOAD_FIELD = "payload"
TRACE_FIELDS = ("traceparent", "tracestate")

_EXAMPLE_PAYLOAD = (
    '{"event_id":"evt-2026-11-25-0001","tenant_id":"acme","agent_id":"billing-agent",'
    '"severity":"high","model":"openai/gpt-oss-120b",'
    '"insight_key":"acp:groq:insight:evt-2026-11-25-0001",'
    '"created_at":"2026-11-25T02:20:01.204Z"}'
)
_EXAMPLE_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_EXAMPLE_TRACESTATE = "vendor=opaque-value"


class InsightCreatedEntry(BaseModel):
    """The fields of one ``acp:groq:insights:stream`` entry (``XADD ... payload '<json>'``)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "payload": _EXAMPLE_PAYLOAD,
                    "traceparent": _EXAMPLE_TRACEPARENT,
                    "tracestate": _EXAMPLE_TRACESTATE,
                },
                {"payload": _EXAMPLE_PAYLOAD},
            ]
        },
    )

    payload: Json[InsightCreated] = Field(
        description="The InsightCreated message as a JSON string (a field of the entry).",
        examples=[_EXAMPLE_PAYLOAD],
    )
    traceparent: str | None = Field(
        None,
        description="W3C trace context of the write that announced the insight; the field "
        "is absent when the worker does not trace (its flags say whether the trace is sampled).",
        examples=[_EXAMPLE_TRACEPARENT],
    )
    tracestate: str | None = Field(
        None,
        description="W3C tracestate carried on from the event's trace; absent when empty.",
        examples=[_EXAMPLE_TRACESTATE],
    )


def insight_created_fields(created: InsightCreated, trace: Mapping[str, str]) -> dict[str, str]:
    """The entry's fields: the message's JSON, and the trace context when there is one."""
    fields = {PAYLOAD_FIELD: created.model_dump_json()}
    for name in TRACE_FIELDS:
        value = trace.get(name)
        if value:
            fields[name] = value
    return fields
