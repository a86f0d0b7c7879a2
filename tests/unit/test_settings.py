"""Settings: the contract's defaults, and a bad value named at start."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.events import Severity
from app.settings import (
    LLMProvider,
    RedisMode,
    RetentionMode,
    Settings,
    SettingsError,
    load_settings,
)

KEY = "gsk_THISisAsecretKEY0123456789abcdefghij"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        "REDIS_URL",
        "GROQ_API_KEY",
        "WORKER_ID",
        "WORKER_CONCURRENCY",
        "LLM_PROVIDER",
        "DEEP_SEVERITIES",
        "METRICS_PORT",
        "LOG_LEVEL",
        "GROQ_MODEL_FAST",
        "PROMPT_REDACT_PII",
        "MAX_PROMPT_CHARS",
        "STREAM_RETENTION",
        "STREAM_KEEP_ENTRIES",
        "STREAM_TRIM_INTERVAL_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_contracts():
    """Every contract default holds when nothing is set."""
    settings = Settings(_env_file=None)
    assert str(settings.redis_url) == "redis://localhost:6379/0"
    assert settings.insight_stream == "acp:groq_queue"
    assert settings.insight_group == "acp_insights_consumer_group"
    assert settings.groq_model_fast == "openai/gpt-oss-20b"
    assert settings.groq_model_deep == "openai/gpt-oss-120b"
    assert settings.deep_severities == {Severity.HIGH, Severity.CRITICAL}
    assert settings.insight_budget_per_hour_per_tenant == 1000
    assert settings.worker_concurrency == 32
    assert settings.claim_idle_seconds == 60
    assert settings.max_deliveries == 5
    assert settings.groq_max_attempts == 3
    assert settings.max_event_bytes == 262_144
    assert settings.max_output_chars == 4000
    assert settings.metrics_port == 9102
    assert settings.llm_provider is LLMProvider.GROQ
    assert settings.redis_mode is RedisMode.STANDALONE


def test_worker_id_defaults_to_host_and_pid():
    """The consumer name is unique per process: <hostname>-<pid>."""
    import os

    assert Settings().worker_id.endswith(f"-{os.getpid()}")


def test_settings_come_from_the_environment(monkeypatch):
    """Environment names are the contract's; lists are comma-separated."""
    monkeypatch.setenv("WORKER_CONCURRENCY", "64")
    monkeypatch.setenv("DEEP_SEVERITIES", "critical")
    monkeypatch.setenv("LLM_PROVIDER", "offline")
    settings = load_settings()
    assert settings.worker_concurrency == 64
    assert settings.deep_severities == {Severity.CRITICAL}
    assert settings.llm_provider is LLMProvider.OFFLINE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "many"),
        ("DEEP_SEVERITIES", "high,severe"),
        ("REDIS_URL", "http://localhost:6379"),
        ("LLM_PROVIDER", "openai"),
        ("METRICS_PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("WORKER_ID", "has space"),
        ("GROQ_MODEL_FAST", ""),
        ("PROMPT_REDACT_PII", "sometimes"),
        ("MAX_PROMPT_CHARS", "3999"),
        ("MAX_PROMPT_CHARS", "1000001"),
        ("MAX_PROMPT_CHARS", "12k"),
        ("STREAM_RETENTION", "forever"),
        ("REDIS_MODE", "sentinel"),
        ("STREAM_KEEP_ENTRIES", "-1"),
        ("STREAM_KEEP_ENTRIES", "lots"),
        ("STREAM_TRIM_INTERVAL_SECONDS", "0"),
        ("STREAM_TRIM_INTERVAL_SECONDS", "soon"),
    ],
)
def test_a_bad_setting_is_refused_by_name(monkeypatch, name, value):
    """A bad value stops the worker with a message naming the setting."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)


def test_the_api_key_never_appears_in_a_settings_error(monkeypatch):
    """Even when another setting is bad, the key's value is not in the message."""
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    monkeypatch.setenv("WORKER_CONCURRENCY", KEY)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.__cause__)


def test_the_api_key_is_a_secret(monkeypatch):
    """repr and str of the settings never show the key."""
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    settings = load_settings()
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
    assert settings.groq_api_key is not None
    assert settings.groq_api_key.get_secret_value() == KEY


def test_groq_without_a_key_refuses_to_start():
    """LLM_PROVIDER=groq with no GROQ_API_KEY is refused, naming the setting."""
    from app.bootstrap import build_llm

    with pytest.raises(SettingsError, match="GROQ_API_KEY"):
        build_llm(Settings(_env_file=None))


def test_a_pid_placeholder_in_worker_id_makes_names_unique_per_process(monkeypatch):
    """WORKER_ID=pod-7-{pid} becomes pod-7-<pid>, one name per process of --workers N."""
    import os

    monkeypatch.setenv("WORKER_ID", "pod-7-{pid}")
    assert load_settings().worker_id == f"pod-7-{os.getpid()}"


def test_prompt_scrubbing_defaults_mask_personal_data_under_a_12000_char_ceiling():
    """PROMPT_REDACT_PII defaults to true and MAX_PROMPT_CHARS to 12000."""
    settings = Settings(_env_file=None)
    assert settings.prompt_redact_pii is True
    assert settings.max_prompt_chars == 12_000


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("true", True)])
def test_prompt_redact_pii_is_read_from_the_environment(monkeypatch, value, expected):
    """PROMPT_REDACT_PII=false turns personal-data masking off."""
    monkeypatch.setenv("PROMPT_REDACT_PII", value)
    assert load_settings().prompt_redact_pii is expected


@pytest.mark.parametrize("value", ["4000", "1000000"])
def test_max_prompt_chars_accepts_its_range_ends(monkeypatch, value):
    """The ceiling may be set anywhere from 4,000 to 1,000,000 characters."""
    monkeypatch.setenv("MAX_PROMPT_CHARS", value)
    assert load_settings().max_prompt_chars == int(value)


def test_stream_retention_defaults_to_acked_keeping_the_newest_100000():
    """The contract's retention defaults, and a modest trim interval."""
    settings = Settings(_env_file=None)
    assert settings.stream_retention is RetentionMode.ACKED
    assert settings.stream_keep_entries == 100_000
    assert settings.stream_trim_interval_seconds == 30


def test_stream_retention_settings_come_from_the_environment(monkeypatch):
    """STREAM_RETENTION=off, STREAM_KEEP_ENTRIES and the interval are read by name."""
    monkeypatch.setenv("STREAM_RETENTION", "off")
    monkeypatch.setenv("STREAM_KEEP_ENTRIES", "0")
    monkeypatch.setenv("STREAM_TRIM_INTERVAL_SECONDS", "2.5")
    settings = load_settings()
    assert settings.stream_retention is RetentionMode.OFF
    assert settings.stream_keep_entries == 0
    assert settings.stream_trim_interval_seconds == 2.5


@pytest.mark.parametrize(
    "url", ["unix:///run/redis.sock", "redis://node-1:7000/3"], ids=["unix", "database-3"]
)
def test_cluster_mode_refuses_a_url_that_cannot_seed_a_cluster(monkeypatch, url):
    """REDIS_MODE=cluster with a socket or a database other than 0 stops at start, named."""
    monkeypatch.setenv("REDIS_MODE", "cluster")
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "REDIS_URL" in str(info.value)
    assert "REDIS_MODE=cluster" in str(info.value)


def test_cluster_mode_takes_one_seed_node(monkeypatch):
    """REDIS_MODE=cluster with a rediss:// seed node (credentials and TLS as today)."""
    monkeypatch.setenv("REDIS_MODE", "cluster")
    monkeypatch.setenv("REDIS_URL", "rediss://worker:pw@node-1:7000")
    settings = load_settings()
    assert settings.redis_mode is RedisMode.CLUSTER
    assert settings.redis_url.port == 7000


def test_the_batch_lane_and_cluster_mode_together_stop_the_worker_naming_both(monkeypatch):
    """GROQ_BATCH_SEVERITIES with REDIS_MODE=cluster is refused at start, both named."""
    monkeypatch.setenv("REDIS_MODE", "cluster")
    monkeypatch.setenv("GROQ_BATCH_SEVERITIES", "low")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "GROQ_BATCH_SEVERITIES" in str(info.value)
    assert "REDIS_MODE=cluster" in str(info.value)


def test_every_sections_checks_run_in_the_settings():
    """A check of one section is not shadowed by another section's of the same name."""
    from app.settings import sections

    composed = Settings.__pydantic_decorators__
    for section in Settings.__mro__[1:]:
        if getattr(section, "__module__", "") != sections.__name__:
            continue
        mine = getattr(section, "__pydantic_decorators__")  # noqa: B009 (a class of the MRO)
        for kind in ("field_validators", "model_validators"):
            for name, decorator in getattr(mine, kind).items():
                used = getattr(composed, kind)[name].func
                assert _function(used) is _function(decorator.func), (section, name)


def _function(method: Any) -> Any:
    return getattr(method, "__func__", method)
