"""The worker's Prometheus metrics, on an explicit registry made per app (and per test)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["LLM_LATENCY_BUCKETS", "Labelled", "Metrics"]

# From a cached 50 ms answer to the 30 s a slow reasoning call may take.
LLM_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)


class Metrics:
    """Every metric of the worker. The first five are the contract's, names fixed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: memory and CPU
        # of this process, for the out-of-memory and CPU rows of the runbook.
        ProcessCollector(registry=r)
        self.events_consumed = Counter(
            "acp_groq_events_consumed_total",
            "Events that reached an outcome, by outcome.",
            ["result"],
            registry=r,
        )
        self.event_latency = Histogram(
            "acp_groq_event_latency_seconds",
            "From taking an event to its insight written, by the model that answered.",
            ["model"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=r,
        )
        self.dlq_size = Gauge("acp_groq_dlq_size", "Entries in acp:groq:dlq.", registry=r)
        self.rate_limited = Counter(
            "acp_groq_rate_limited_total",
            "Events skipped because their tenant was over its hourly budget.",
            ["tenant_id"],
            registry=r,
        )
        self.api_errors = Counter(
            "acp_groq_api_errors_total",
            "Failed LLM attempts, by kind of failure.",
            ["error_type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "acp_groq_dead_letters_total",
            "Events dead-lettered, by reason.",
            ["reason"],
            registry=r,
        )
        self.dlq_dropped = Counter(
            "acp_groq_dlq_dropped_total",
            "Dead letters dropped from the tail of acp:groq:dlq (the oldest) to keep it "
            "within DLQ_MAX_ENTRIES.",
            registry=r,
        )
        self.llm_latency = Histogram(
            "acp_groq_llm_call_seconds",
            "Duration of one LLM attempt (successful or not), by model.",
            ["model"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "acp_groq_llm_tokens_total",
            "Tokens used by LLM answers, by tenant, model and kind (prompt, completion, and "
            "cached: the part of prompt served from the provider's prompt cache).",
            ["tenant_id", "model", "kind"],
            registry=r,
        )
        self.estimated_cost = Counter(
            "acp_groq_estimated_cost_usd_total",
            "Estimated USD spent on LLM answers (GROQ_PRICE_TABLE), by tenant and lane "
            "(online, batch).",
            ["tenant_id", "lane"],
            registry=r,
        )
        self.fallbacks = Counter(
            "acp_groq_model_fallbacks_total",
            "Events the deep model failed on and the fast model was asked instead.",
            registry=r,
        )
        self.tier_requests = Counter(
            "acp_groq_service_tier_requests_total",
            "Model requests by Groq service tier sent (default: none sent) and result "
            "(answered, capacity_exceeded: flex was full, failed: any other error).",
            ["service_tier", "result"],
            registry=r,
        )
        self.tier_fallbacks = Counter(
            "acp_groq_service_tier_fallbacks_total",
            "Urgent events whose flex request was refused (498) and sent again on_demand.",
            ["severity"],
            registry=r,
        )
        self.capacity_waits = Counter(
            "acp_groq_capacity_waits_total",
            "Times an event waited for flex capacity before trying again (no dead letter).",
            ["severity"],
            registry=r,
        )
        self.config_alarms = Counter(
            "acp_groq_configuration_alarms_total",
            "LLM errors only an operator can fix (bad key, decommissioned model), by kind.",
            ["kind"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "acp_groq_breaker_state",
            "The model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.scrub_failures = Counter(
            "acp_groq_prompt_scrub_failures_total",
            "Deliveries whose prompt could not be scrubbed (and so was not sent).",
            registry=r,
        )
        self.prompt_redactions = Counter(
            "acp_groq_prompt_redactions_total",
            "Values masked in prompts before they left for the model, by kind "
            "(aws_access_key, email, ...).",
            ["kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "acp_groq_events_in_flight", "Events being processed by this process.", registry=r
        )
        self.group_lag = Gauge(
            "acp_groq_group_lag",
            "Entries in the stream not yet delivered to the group (sampled).",
            registry=r,
        )
        self.kafka_lag = Gauge(
            "acp_groq_kafka_lag",
            "INBOUND=kafka: records of each partition this process owns not yet done "
            "(high watermark minus the done prefix; sampled).",
            ["topic", "partition"],
            registry=r,
        )
        self.group_pending = Gauge(
            "acp_groq_group_pending",
            "Entries delivered to the group and not yet acknowledged (sampled).",
            registry=r,
        )
        self.stream_length = Gauge(
            "acp_groq_stream_length",
            "Entries in the inbound stream (XLEN, sampled).",
            registry=r,
        )
        self.waiting = Gauge(
            "acp_groq_waiting_events",
            "Events waiting in the scheduler for a model slot, by severity (sampled; "
            "EVENT_ORDER=priority).",
            ["severity"],
            registry=r,
        )
        self.oldest_waiting = Gauge(
            "acp_groq_oldest_waiting_seconds",
            "Age of the oldest event waiting in the scheduler, by severity (sampled; 0: none).",
            ["severity"],
            registry=r,
        )
        self.waiting_by_tenant = Gauge(
            "acp_groq_waiting_events_by_tenant",
            "Events waiting in the scheduler of the tenants with the most (top 5; sampled).",
            ["tenant_id"],
            registry=r,
        )
        self.scheduled_running = Gauge(
            "acp_groq_scheduled_running",
            "Scheduled events handed to a model slot in any process (sampled).",
            registry=r,
        )
        self.waiting_retry = Gauge(
            "acp_groq_waiting_retry_events",
            "Scheduled events put off until the provider has room (flex full; sampled).",
            registry=r,
        )
        self.lookahead_read = Counter(
            "acp_groq_lookahead_read_total",
            "Unread entries the look-ahead read past the group's position (a long lag).",
            registry=r,
        )
        self.lookahead_scheduled = Counter(
            "acp_groq_lookahead_scheduled_total",
            "Urgent events the look-ahead scheduled before the group reached them.",
            registry=r,
        )
        self.backlog = Gauge(
            "acp_groq_backlog_events",
            "Events waiting for a worker: the group's lag plus the events waiting in the "
            "scheduler (sampled; NaN when the lag is unknown). What autoscaling reads.",
            registry=r,
        )
        self.stream_trimmed = Counter(
            "acp_groq_stream_trimmed_total",
            "Inbound stream entries removed by retention (as XTRIM reports them).",
            registry=r,
        )
        self.redis_errors = Counter(
            "acp_groq_redis_errors_total",
            "Redis calls that failed and were retried, by operation.",
            ["operation"],
            registry=r,
        )
        self.redis_refusals = Counter(
            "acp_groq_redis_refusals_total",
            "Redis steps of an event waited out because Redis was away or refused for now, "
            "by reason (OOM, READONLY, MASTERDOWN, LOADING, BUSY, ConnectionError, ...).",
            ["reason"],
            registry=r,
        )
        # -- the batch lane (app/service/lane_runner.py) --------------------------------
        self.batch_lane_waiting = Gauge(
            "acp_groq_batch_lane_waiting",
            "Events waiting in the batch lane for a batch (sampled).",
            registry=r,
        )
        self.batch_lane_oldest_seconds = Gauge(
            "acp_groq_batch_lane_oldest_waiting_seconds",
            "Age of the oldest event waiting in the batch lane for a batch (sampled; 0: none).",
            registry=r,
        )
        self.batch_lane_batches = Gauge(
            "acp_groq_batch_lane_batches",
            "The lane's batches not yet collected, by state (submitting, validating, "
            "in_progress, finalizing, completed, expired, cancelled, failed...; sampled).",
            ["state"],
            registry=r,
        )
        self.batches_submitted = Counter(
            "acp_groq_batches_submitted_total",
            "Batches this worker submitted to the Batch API.",
            registry=r,
        )
        self.batch_lane_fallbacks = Counter(
            "acp_groq_batch_lane_fallbacks_total",
            "Events of the batch lane asked online instead, by reason (failed_line, "
            "unanswered: an expired, cancelled or failed batch; refused: the file was refused).",
            ["reason"],
            registry=r,
        )
        self.batch_lane_errors = Counter(
            "acp_groq_batch_lane_errors_total",
            "Steps of the batch lane that failed (Redis or the Batch API away) and are retried.",
            registry=r,
        )
        self.lane_tokens = Counter(
            "acp_groq_lane_tokens_total",
            "Tokens of LLM answers by lane (online, batch) and kind (prompt, completion, cached).",
            ["lane", "kind"],
            registry=r,
        )
        # -- the shared rate limiter (app/adapters/rate_limit.py) ----------------------
        self.limiter_wait = Histogram(
            "acp_groq_limiter_wait_seconds",
            "Time an LLM call waited for the shared rate limiter before going out, by model.",
            ["model"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.limiter_allowance = Gauge(
            "acp_groq_limiter_allowance",
            "What a model's bucket can give now: requests (rpm, rpd) or tokens (tpm, tpd).",
            ["model", "kind"],
            registry=r,
        )
        self.rate_limit_responses = Counter(
            "acp_groq_rate_limit_responses_total",
            "429 answers received from the provider, by model.",
            ["model"],
            registry=r,
        )
        self.rate_limit_avoided = Counter(
            "acp_groq_rate_limit_avoided_total",
            "LLM calls that waited for the limiter instead of going out over the limit.",
            ["model"],
            registry=r,
        )
        self.limiter_paused = Gauge(
            "acp_groq_limiter_paused_seconds",
            "How long model calls stay paused by a long rate limit (0: not paused).",
            registry=r,
        )


class Labelled:
    """``metric.labels(*values)`` with each child looked up once, for the per-event path.

    ``labels()`` validates and sorts its arguments and takes the metric's lock on every
    call (about 2 µs); an event asks for six or more children. The children cached here
    are the metric's own (the same objects ``labels()`` returns), so there are no more of
    them than the registry holds anyway.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
