"""What the AsyncAPI document of a worker on Kafka (``INBOUND=kafka``) says of its channel.

The document is generated as the Redis one is (``groq-worker asyncapi --inbound kafka``,
committed in ``asyncapi/kafka/``): FastStream's Kafka channel for the subscriber, beside
the Redis channels the worker still writes. The topic and the server are the contract's
defaults, whatever the generating process's settings say.
"""

from __future__ import annotations

from app.domain.keys import Keys
from app.settings import Settings

__all__ = ["DOCUMENTED_TOPIC", "KAFKA_INBOUND_DESCRIPTION", "KAFKA_SPEC_SERVER_URL"]

DOCUMENTED_TOPIC: str = Settings.model_fields["kafka_topic"].default
KAFKA_SPEC_SERVER_URL = "kafka:9092"
_GROUP: str = Settings.model_fields["insight_group"].default

KAFKA_INBOUND_DESCRIPTION = f"""\
Audit events of the gateway on Kafka (the worker's `INBOUND=kafka`), one record per
decision. Every worker process is a member of the consumer group `{_GROUP}`
(`INSIGHT_GROUP`); deployments may rename the topic with `KAFKA_TOPIC` (default
`{DOCUMENTED_TOPIC}`).

**How a producer writes an event.** The record's value is the event as a JSON object
(UTF-8, at most `MAX_EVENT_BYTES`); its key may be the tenant id (records of one key keep
their order on one partition); a W3C `traceparent` (and `tracestate`) header puts the
worker's spans in the producer's trace. Any Kafka client does; no FastStream
is needed.

**What happens to an event** is what happens to one read from the Redis stream: exactly
one outcome (`enriched`, `duplicate`, `rate_limited`, `dead_lettered`), written to Redis
(`{Keys.insight("{event_id}")}`, the indexes, `{Keys.INSIGHTS_STREAM}`, `{Keys.DLQ}`).
The record's offset is committed only after its outcome is written (at least once; a
redelivery is a `duplicate`, charged once). A record delivered more than `MAX_DELIVERIES`
times is dead-lettered (`max_deliveries`); a dead letter names the record as stream
`kafka:<topic>` and entry `<partition>-<offset>`, and `groq-worker dlq replay` sends it
back to its topic.
"""
