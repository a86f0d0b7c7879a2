"""The contract's Redis keys and their bounds, named here and nowhere else.

The Insight API and UI read these names: they are fixed by the contract. The internal
keys (owner, lease, retention lock) are the worker's own, documented in the README.
"""

from __future__ import annotations

__all__ = [
    "AGENT_LIST_KEEP",
    "BUDGET_WINDOW_SECONDS",
    "DLQ_MAX_ENTRIES",
    "INSIGHT_STREAM_MAXLEN",
    "INSIGHT_TTL_SECONDS",
    "SCHEDULED_HOLD_SECONDS",
    "TIMELINE_KEEP",
    "ClusterKeys",
    "Keys",
]

INSIGHT_TTL_SECONDS = 86_400
BUDGET_WINDOW_SECONDS = 3_600
TIMELINE_KEEP = 10_000
AGENT_LIST_KEEP = 100
INSIGHT_STREAM_MAXLEN = 10_000
DLQ_MAX_ENTRIES = 100_000  # the default of the setting DLQ_MAX_ENTRIES
# How long an event waiting in the scheduler keeps its id owned and its lease: longer than
# any backlog is drained (the job itself has no TTL: it stays until its outcome is written).
SCHEDULED_HOLD_SECONDS = 8 * 86_400


class Keys:
    """The contract's Redis keys. Ids reaching here were validated by ``AuditEvent``."""

    # The batch lane (internal; see ``app/adapters/redis_lane.py``).
    LANE_REQUESTS = "acp:groq:batch:requests"  # HASH event_id -> prepared request JSON
    LANE_WAITING = "acp:groq:batch:waiting"  # ZSET event_id, score = recorded (epoch s)
    LANE_BATCHES = "acp:groq:batch:batches"  # HASH lane batch id -> batch record JSON
    LANE_LOCK = "acp:groq:batch:lock"  # the one worker submitting and polling

    # The scheduler of EVENT_ORDER=priority (internal; app/adapters/redis_scheduler.py). One
    # hash tag: every key in one slot, so each step is one script on a Redis Cluster too.
    SCHED = "{acp:groq:sched}:"  # the prefix of every key below (scripts build the rest)
    SCHED_JOBS = SCHED + "jobs"  # HASH event_id -> the waiting or running job (JSON)
    SCHED_RUNNING = SCHED + "running"  # ZSET event_id -> when its lease was last renewed (ms)
    SCHED_OWNERS = SCHED + "owners"  # HASH event_id -> the consumer (WORKER_ID) running it
    SCHED_DELIVERIES = SCHED + "deliveries"  # HASH event_id -> times handed to a slot
    SCHED_LATER = SCHED + "later"  # ZSET event_id -> when it waits again (ms): a retry later
    SCHED_CLOCK = SCHED + "clock"  # HASH severity -> virtual time (the last tag served)
    SCHED_AHEAD = SCHED + "ahead"  # SET entry ids the look-ahead scheduled, not yet delivered
    SCHED_AHEAD_CURSOR = SCHED + "ahead_cursor"  # STRING the last entry id looked ahead at

    TIMELINE = "acp:groq:insights:timeline"
    INSIGHTS_STREAM = "acp:groq:insights:stream"
    DLQ = "acp:groq:dlq"

    @staticmethod
    def insight(event_id: str) -> str:
        return f"acp:groq:insight:{event_id}"

    @staticmethod
    def kafka_attempts(group: str, topic: str, partition: int, offset: int) -> str:
        """INBOUND=kafka (internal): how often a record was delivered (Kafka counts none)."""
        return f"acp:groq:kafka:attempts:{group}:{topic}:{partition}:{offset}"

    @staticmethod
    def by_agent(agent_id: str) -> str:
        return f"acp:groq:insights:by_agent:{agent_id}"

    @staticmethod
    def by_tenant(tenant_id: str) -> str:
        return f"acp:groq:insights:by_tenant:{tenant_id}"

    @staticmethod
    def rate_limit(tenant_id: str) -> str:
        return f"acp:groq:rate_limit:{tenant_id}"

    @staticmethod
    def charged(tenant_id: str) -> str:
        """The events counted in the tenant's current hour (internal; a SET beside its
        counter, expiring with it): each event is charged once, however often delivered.
        The hash tag keeps it in the counter's slot on a Redis Cluster."""
        return f"{{{Keys.rate_limit(tenant_id)}}}:charged"

    @staticmethod
    def owner(event_id: str) -> str:
        """Which tenant an event id belongs to (internal; lives as long as the insight)."""
        return f"acp:groq:owner:{event_id}"

    @staticmethod
    def lease(event_id: str) -> str:
        """The stream entry enriching an event right now (internal; see ``_ADMIT``)."""
        return f"acp:groq:lease:{event_id}"

    @staticmethod
    def sched_tenants(severity: str) -> str:
        """The tenants with events of ``severity`` waiting, by the tag of their next one."""
        return f"{Keys.SCHED}tenants:{severity}"

    @staticmethod
    def sched_queue(severity: str, tenant_id: str) -> str:
        """A tenant's waiting events of ``severity``, oldest first (``<cost> <event_id>``)."""
        return f"{Keys.SCHED}queue:{severity}:{tenant_id}"

    @staticmethod
    def sched_since(severity: str) -> str:
        """The waiting events of ``severity`` by when they were scheduled (ms)."""
        return f"{Keys.SCHED}since:{severity}"

    @staticmethod
    def retention_lock(stream: str) -> str:
        """The worker trimming ``stream`` now (internal; see ``app/adapters/retention.py``)."""
        return f"acp:groq:retention:{stream}"


class ClusterKeys:
    """The internal keys of cluster mode (``app/adapters/redis_cluster_store.py``).

    Each names, in a hash tag, the contract key it must share a slot with, so one
    single-slot script reads both: ``{acp:groq:insight:<id>}`` is hashed as the insight
    key itself (contract keys hold no braces: ids are validated without them).
    """

    @staticmethod
    def owner(event_id: str) -> str:
        return f"{{{Keys.insight(event_id)}}}:owner"

    @staticmethod
    def lease(event_id: str) -> str:
        return f"{{{Keys.insight(event_id)}}}:lease"

    @staticmethod
    def dead_letter_mark(stream: str, entry_id: str) -> str:
        """Set once an entry's dead letter is in the DLQ (beside the DLQ)."""
        return f"{{{Keys.DLQ}}}:letter:{stream}:{entry_id}"
