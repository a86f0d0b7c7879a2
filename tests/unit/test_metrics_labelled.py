"""``Labelled``: the per-event path's cached children are the metric's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.runtime.metrics import Labelled, Metrics


def test_cached_children_count_in_the_registry_under_the_same_labels() -> None:
    """Increments through ``Labelled`` show in the registry exactly as through ``labels()``."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    tokens = Labelled(metrics.llm_tokens)
    tokens("acme", "openai/gpt-oss-20b", "prompt").inc(100)
    tokens("acme", "openai/gpt-oss-20b", "prompt").inc(20)
    metrics.llm_tokens.labels(tenant_id="acme", model="openai/gpt-oss-20b", kind="prompt").inc(3)
    tokens("globex", "openai/gpt-oss-20b", "completion").inc(7)

    labels = {"tenant_id": "acme", "model": "openai/gpt-oss-20b", "kind": "prompt"}
    assert registry.get_sample_value("acp_groq_llm_tokens_total", labels) == 123
    other = {**labels, "tenant_id": "globex", "kind": "completion"}
    assert registry.get_sample_value("acp_groq_llm_tokens_total", other) == 7
    assert tokens("acme", "openai/gpt-oss-20b", "prompt") is metrics.llm_tokens.labels(
        "acme", "openai/gpt-oss-20b", "prompt"
    )
