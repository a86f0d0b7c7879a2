"""Tests never inherit settings from the shell.

A setting exported where the tests run (``GROQ_RPM_LIMIT=1 make test``), or by a test in
its own process, reaches neither the settings ``make_settings`` builds nor the environment
of a worker process a test starts; the session fixture keeps the shell's out of the test
process altogether.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app.settings import LLMProvider, Settings
from tests.faults.harness import WorkerProcess
from tests.support.environment import is_setting_name, setting_names_in

# Settings a shell might export, and names of setting families that are not fields (yet).
HOSTILE = {
    "GROQ_RPM_LIMIT": "1",
    "WORKER_CONCURRENCY": "1",
    "REDIS_URL": "redis://nowhere:1/0",
    "LLM_PROVIDER": "offline",
    "GROQ_MODEL_LIMITS": '{"openai/gpt-oss-20b": {"tpm": 10}}',
    "worker_id": "lower-case-is-a-setting-too",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://nowhere:4317",
    "KAFKA_BOOTSTRAP_SERVERS": "nowhere:9092",
    "DLQ_STREAM": "elsewhere",
}
DEFAULT_CONCURRENCY: int = Settings.model_fields["worker_concurrency"].default


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    """A worker process as the fault tests build it (never started here)."""
    process = WorkerProcess(
        redis_url, "http://127.0.0.1:9", worker_id="isolated", worker_concurrency=4
    )
    try:
        yield process
    finally:
        process.log_path.unlink(missing_ok=True)


def test_no_setting_of_the_shell_is_in_the_test_process():
    """The session fixture removed every setting-like name the shell exported."""
    assert setting_names_in(os.environ) == []


def test_an_exported_setting_is_read_by_settings_without_the_guard(hostile):
    """The premise: pydantic-settings reads the environment, env file or not."""
    settings = Settings(_env_file=None)
    assert settings.groq_rpm_limit == 1
    assert settings.worker_concurrency == 1
    assert settings.llm_provider is LLMProvider.OFFLINE
    assert settings.worker_id == HOSTILE["worker_id"]


def test_make_settings_ignores_settings_exported_in_the_test_process(
    hostile, make_settings, redis_url
):
    """make_settings: the test's values and the defaults, nothing of the environment."""
    settings = make_settings()
    assert settings.groq_rpm_limit == 0
    assert settings.groq_model_limits == {}
    assert settings.worker_concurrency == DEFAULT_CONCURRENCY
    assert settings.llm_provider is LLMProvider.GROQ
    assert settings.worker_id == "test-worker"
    assert settings.redis_url.unicode_string().rstrip("/") == redis_url.rstrip("/")
    assert make_settings(groq_rpm_limit=5, worker_concurrency=2).groq_rpm_limit == 5


def test_a_worker_process_gets_no_setting_exported_in_the_test_process(hostile, worker, redis_url):
    """WorkerProcess's environment: this one's without settings, plus what the test gave."""
    env = worker.env
    for name in HOSTILE:
        if name.upper() not in {"REDIS_URL", "WORKER_CONCURRENCY", "LLM_PROVIDER", "WORKER_ID"}:
            assert name not in env, name
    assert env["REDIS_URL"] == redis_url
    assert env["WORKER_CONCURRENCY"] == "4"
    assert env["LLM_PROVIDER"] == "groq"
    assert env["WORKER_ID"] == "isolated"
    assert "worker_id" not in env
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment is kept
    harness_settings = {name for name in env if is_setting_name(name)}
    assert harness_settings == {
        "REDIS_URL",
        "GROQ_BASE_URL",
        "GROQ_API_KEY",
        "LLM_PROVIDER",
        "WORKER_ID",
        "METRICS_PORT",
        "LOG_FORMAT",
        "GROQ_BACKOFF_BASE_SECONDS",
        "GROQ_BACKOFF_MAX_SECONDS",
        "READ_BLOCK_MS",
        "WORKER_CONCURRENCY",
    }
