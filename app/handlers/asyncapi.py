"""Everything the AsyncAPI document says that the handlers' code does not.

The channels, payload schemas and examples come from the declarations in
``app/handlers/events.py`` and the pydantic models (``Field(description=...,
examples=...)``). This module holds the prose around them, the key table (generated
from ``Keys``), and ``WorkerAsyncAPI``, which makes the document describe every
deployment rather than the process that generates it:

* the inbound channel names the contract's stream and group and the consumer
  ``${WORKER_ID}`` (the setting), whatever this process's settings say, so the document
  is the same on every host;
* the dead-letter list says ``lpush``: the store pushes each letter on the head of the
  list (newest first), where FastStream's list publisher binding says ``rpush``;
* the two outbound messages have no correlation id: the worker writes plain fields and
  plain JSON, with no FastStream headers to hold one.

``faststream docs gen app:app`` writes it; ``groq-worker asyncapi --check`` guards the
committed copy in ``asyncapi/``.
"""

from __future__ import annotations

import json

from faststream.specification import AsyncAPI
from faststream.specification.base import Specification

from app.domain.keys import INSIGHT_STREAM_MAXLEN, Keys
from app.settings import Settings

__all__ = [
    "DEAD_LETTER_DESCRIPTION",
    "DOCUMENTED_GROUP",
    "DOCUMENTED_STREAM",
    "INBOUND_DESCRIPTION",
    "OUTBOUND_DESCRIPTION",
    "SPEC_SERVER_URL",
    "WorkerAsyncAPI",
]

# The inbound channel as the document names it: the contract's stream and group.
DOCUMENTED_STREAM: str = Settings.model_fields["insight_stream"].default
DOCUMENTED_GROUP: str = Settings.model_fields["insight_group"].default
DOCUMENTED_CONSUMER = "${WORKER_ID}"
SPEC_SERVER_URL = "redis://redis:6379/0"

# The smallest valid event, as a gateway writes it.
_MINIMAL_EVENT = {
    "event_id": "evt-2026-11-25-0001",
    "tenant_id": "acme",
    "agent_id": "billing-agent",
    "severity": "high",
    "decision": "deny",
    "timestamp": 1795573200.5,
}

# (key, Redis type, what it holds), in the order the document lists them.
_KEYS = (
    (DOCUMENTED_STREAM, "STREAM", "audit events written by the gateway (field `payload`)"),
    (Keys.insight("{event_id}"), "STRING", "the insight JSON, TTL 24 h"),
    (Keys.TIMELINE, "ZSET", "event ids scored by event time, newest 10,000"),
    (Keys.by_tenant("{tenant_id}"), "ZSET", "the same, one tenant's"),
    (Keys.by_agent("{agent_id}"), "LIST", "event ids, newest first, newest 100"),
    (Keys.INSIGHTS_STREAM, "STREAM", "`InsightCreated` JSON in field `payload`, one per insight"),
    (Keys.DLQ, "LIST", "dead letters (JSON), newest first"),
    (Keys.rate_limit("{tenant_id}"), "STRING", "enrichments in the tenant's current hour"),
)
_KEY_TABLE = "\n".join(
    [
        "| key | type | what it holds |",
        "| --- | --- | --- |",
        *(f"| `{key}` | {kind} | {what} |" for key, kind, what in _KEYS),
    ]
)
_INTERNAL_KEYS = f"""\
Every other key the worker writes is internal: the event leases and owners, the shared rate
limiter (`acp:groq:limiter:*`), the batch lane (`acp:groq:batch:*`), the scheduler
(`{Keys.SCHED}*`) and the retention lock. Their shape may change in any release: gateways
and readers never read or write them."""

APP_DESCRIPTION = f"""\
The LLM enrichment worker of the agent-security platform. It reads the gateway's audit
events from the Redis stream `{DOCUMENTED_STREAM}` as the consumer group
`{DOCUMENTED_GROUP}`, asks a Groq-hosted model for a short analyst insight on each,
and writes the insight where the Insight API and UI read it.

**Gateways** write one stream entry per event, the event JSON in a field named `payload`:
`XADD {DOCUMENTED_STREAM} * payload '<event JSON>'`. The channel `{DOCUMENTED_STREAM}` below has the
event schema, examples, and the outcomes an event can have.

**Redis keys of the contract**

{_KEY_TABLE}

{_INTERNAL_KEYS}
"""

INBOUND_DESCRIPTION = f"""\
Audit events of the gateway, one per decision about an AI agent's tool call. The gateway
writes them; every worker process reads them as one consumer (named by its `WORKER_ID`) of
the group `{DOCUMENTED_GROUP}`. Deployments may rename the stream with the
worker's setting `INSIGHT_STREAM` (default `{DOCUMENTED_STREAM}`).

**How a gateway writes an event.** One stream entry per event, with one field named
`payload` holding the event as a JSON object (UTF-8, the whole entry at most
`MAX_EVENT_BYTES`, 262144 bytes by default). No FastStream is needed, any Redis client does:

    XADD {DOCUMENTED_STREAM} * payload '{json.dumps(_MINIMAL_EVENT)}'

Python gateways can call `app.client.publish_event(redis, event)`, which validates the event
with the worker's own model first and then writes exactly this. Entries published by a
FastStream publisher (one field `__data__`) are accepted too.

**Tracing.** A gateway that traces may add its W3C trace context as fields of their own
beside `payload` (or as headers of a FastStream message):
`XADD {DOCUMENTED_STREAM} * payload '<event JSON>' traceparent '00-<trace id>-<span id>-01'
tracestate '<vendor state>'`. A worker that traces (`OTEL_EXPORTER_OTLP_ENDPOINT` set) makes
its spans of the event children of that span, and carries the context on to the
InsightCreated entry; without one, a new trace starts. The fields count towards
`MAX_EVENT_BYTES`. Fields the schema does not
list are allowed (`raw_input`, tool arguments, ...): they are kept, and never sent to the
model.

**What happens to an event.** Exactly one outcome each, counted by the metric
`acp_groq_events_consumed_total{{result}}`; the entry is acknowledged in every case and the
gateway gets no reply. `event_id` is the idempotency key: writing an event twice is safe.

- `enriched`: the insight is written to `{Keys.insight("{event_id}")}` (JSON, TTL 24 h),
  indexed in `{Keys.TIMELINE}`, `{Keys.by_tenant("{tenant_id}")}` and
  `{Keys.by_agent("{agent_id}")}`, and announced on `{Keys.INSIGHTS_STREAM}`.
- `duplicate`: this tenant already has an insight for this `event_id`: nothing is rewritten.
- `rate_limited`: the tenant is over its hourly budget (`INSIGHT_BUDGET_PER_HOUR_PER_TENANT`,
  1000 by default, counted in `{Keys.rate_limit("{tenant_id}")}`): no insight, no dead letter.
- `dead_lettered`: pushed on `{Keys.DLQ}` with its reason: `invalid` (not an event of this
  schema, not JSON, no `payload` field, too large), `llm_permanent`, `llm_exhausted`,
  `conflict` (the `event_id` already has another tenant's insight), `max_deliveries` or
  `scrub_failed` (the prompt could not be scrubbed, so it was never sent). A letter holds
  the event once; an entry over `MAX_EVENT_BYTES` leaves excerpts, its size and a SHA-256.
  The list keeps the newest `DLQ_MAX_ENTRIES` letters (100,000).

**In which order.** Not the stream's. With the worker's default `EVENT_ORDER=priority`,
`critical` and `high` events are answered before waiting events of lower severity, and
tenants with waiting events of one severity share the model calls fairly; one tenant's
events of one severity start in the order written. An event that waits is kept in the
worker's own scheduler and its entry acknowledged at once, so an acknowledged entry does not
mean its insight is written: the insight key, the `InsightCreated` message, or the dead
letter say when it is done. With `EVENT_ORDER=fifo` entries are taken in the stream's order
and acknowledged with their outcome.
"""

OUTBOUND_DESCRIPTION = f"""\
One entry per insight written, added by the worker in the same transaction as the insight.
The entries are plain stream fields, not FastStream messages: any Redis client reads them
with `XREAD`/`XRANGE` and parses the field `payload` as JSON:

    XREAD COUNT 10 STREAMS {Keys.INSIGHTS_STREAM} 0
    -> payload '{{"event_id": "...", "insight_key": "...", ...}}' traceparent '00-...-01'

- `payload`: the `InsightCreated` JSON (`event_id`, `tenant_id`, `agent_id`, `severity`,
  `model`, `insight_key`, `created_at`);
- `traceparent`, `tracestate`: the W3C trace context of the write that announced it, present
  only when the worker traces (`OTEL_EXPORTER_OTLP_ENDPOINT` set); the flags say whether the
  trace is sampled.

The insight itself (summary, risk, recommendation, model, latency) is the JSON at
`insight_key` (`{Keys.insight("{event_id}")}`, TTL 24 h). A FastStream subscriber receives an
entry as the JSON object of its fields: annotate the handler's argument with this schema
(`app.domain.insight_stream.InsightCreatedEntry`, whose `payload` is parsed into the model).
Since version 0.2.0; before, each entry was one FastStream-framed field `__data__`. The
stream keeps about the newest {INSIGHT_STREAM_MAXLEN:,} entries \
(`MAXLEN ~ {INSIGHT_STREAM_MAXLEN}`); after a crash an insight may be announced twice, so
readers key on `event_id`.
"""

DEAD_LETTER_DESCRIPTION = f"""\
Dead letters: the events that ended as `dead_lettered`, newest first. Each element is one
JSON document (a plain `LPUSH` of the JSON below, not a FastStream message), written in the
same transaction as the acknowledgement of its stream entry. It keeps the entry's fields as
received, so nothing is lost: `groq-worker dlq list` shows them and `groq-worker dlq replay`
puts them back on the inbound stream once the cause is fixed. Read them with
`LRANGE {Keys.DLQ} 0 9`. The list keeps the newest `DLQ_MAX_ENTRIES` letters (100,000 by
default): a letter pushed past that drops the oldest, counted by the metric
`acp_groq_dlq_dropped_total`.
"""


class WorkerAsyncAPI(AsyncAPI):
    """The worker's AsyncAPI 3.0 document, the same for every deployment."""

    def to_specification(self) -> Specification:
        spec = super().to_specification()
        for channel in getattr(spec, "channels", {}).values():
            binding = channel.bindings.redis if channel.bindings else None
            if binding is None:
                continue
            if binding.method == "xreadgroup":
                channel.address = binding.channel = DOCUMENTED_STREAM
                binding.groupName = DOCUMENTED_GROUP
                binding.consumerName = DOCUMENTED_CONSUMER
            elif binding.channel == Keys.DLQ:
                binding.method = "lpush"
        messages = getattr(getattr(spec, "components", None), "messages", None) or {}
        for name, message in messages.items():
            if name.startswith((f"{Keys.INSIGHTS_STREAM}:", f"{Keys.DLQ}:")):
                message.correlationId = None
        return spec
