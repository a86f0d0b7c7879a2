"""The model provider (behind the shared rate limiter when limits are set) and the
provider's Batch API, of ``LLM_PROVIDER``."""

from __future__ import annotations

import asyncio

from app.adapters.redis_clients import RedisClient
from app.domain.ports import LLM, BatchAPI
from app.runtime.metrics import Metrics
from app.settings import LLMProvider, Settings, SettingsError

__all__ = ["build_batch_api", "build_llm"]


def build_llm(
    settings: Settings,
    *,
    redis: RedisClient | None = None,
    metrics: Metrics | None = None,
    stopping: asyncio.Event | None = None,
) -> LLM:
    """The configured LLM provider, behind the shared rate limiter when limits are set.

    The limiter needs the worker's ``redis`` and ``metrics`` (without them, no limiter);
    ``stopping`` lets a call waiting on it be postponed at shutdown.
    """
    provider = _build_provider(settings)
    limits = settings.limit_table
    if redis is None or metrics is None or not limits.any:
        return provider
    from app.adapters.rate_limit import RateLimitedLLM, RedisLimiter

    return RateLimitedLLM(
        provider,
        RedisLimiter(redis, limits),
        metrics=metrics,
        pause_threshold=settings.groq_limiter_pause_threshold_seconds,
        stopping=stopping,
    )


def build_batch_api(settings: Settings) -> BatchAPI:
    """The provider's Batch API for the batch lane (Groq's, or the offline one)."""
    if settings.llm_provider is LLMProvider.OFFLINE:
        from app.adapters.offline_llm import OfflineBatchAPI

        return OfflineBatchAPI()
    if settings.groq_api_key is None:
        raise SettingsError("invalid settings: GROQ_API_KEY: required when LLM_PROVIDER=groq")
    from app.adapters.groq_batches import GroqBatchAPI

    return GroqBatchAPI(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=str(settings.groq_base_url) if settings.groq_base_url else None,
    )


def _build_provider(settings: Settings) -> LLM:
    """The provider itself. Refuses to start the Groq one without a key."""
    if settings.llm_provider is LLMProvider.OFFLINE:
        from app.adapters.offline_llm import OfflineLLM

        return OfflineLLM()
    if settings.llm_provider is LLMProvider.OPENAI_COMPATIBLE:
        from app.adapters.openai_compatible_llm import OpenAICompatibleLLM

        assert settings.llm_base_url is not None  # the settings refuse it missing
        return OpenAICompatibleLLM(
            base_url=str(settings.llm_base_url),
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            timeout_seconds=settings.groq_timeout_seconds,
        )
    if settings.groq_api_key is None:
        raise SettingsError(
            "invalid settings: GROQ_API_KEY: required when LLM_PROVIDER=groq "
            "(set LLM_PROVIDER=offline to run without a model)"
        )
    from app.adapters.groq_llm import GroqLLM

    return GroqLLM(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=str(settings.groq_base_url) if settings.groq_base_url else None,
        timeout_seconds=settings.groq_timeout_seconds,
        max_connections=max(settings.worker_concurrency, 100),
    )
