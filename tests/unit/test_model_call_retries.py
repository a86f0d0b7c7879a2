"""The model call's retry policy: attempts counted and backed off the same from the first on."""

from __future__ import annotations

import asyncio

import pytest

from app.domain.errors import PermanentLLMError, TransientLLMError
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service.model_calls import ModelCaller
from app.settings import Settings
from tests.support.fakes import ScriptedLLM

FAST = "openai/gpt-oss-20b"


def caller(llm: ScriptedLLM, sleeps: list[float], **overrides: object) -> ModelCaller:
    settings = Settings.model_validate(
        {
            "groq_api_key": "gsk_test",
            "groq_backoff_base_seconds": 1.0,
            "groq_backoff_max_seconds": 8.0,
            **overrides,
        }
    )

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return ModelCaller(settings, llm=llm, metrics=Metrics(), state=WorkerState(), sleep=sleep)


def test_backoff_doubles_from_the_first_failure_and_attempts_are_counted() -> None:
    """Two transient failures then an answer: 3 attempts, waits in [0.5, 1] then [1, 2]."""
    llm = ScriptedLLM([TransientLLMError("server", "503"), TransientLLMError("server", "503")])
    sleeps: list[float] = []
    answer = asyncio.run(caller(llm, sleeps, groq_max_attempts=3).answer(FAST, "s", "u"))
    assert answer.attempts == 3
    assert len(llm.requests) == 3
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0


def test_retry_after_of_the_first_failure_is_waited() -> None:
    """A 429 with retry-after 5 s on the first attempt: the second waits at least 5 s."""
    llm = ScriptedLLM([TransientLLMError("rate_limited", "429", status=429, retry_after=5.0)])
    sleeps: list[float] = []
    answer = asyncio.run(caller(llm, sleeps).answer(FAST, "s", "u"))
    assert answer.attempts == 2
    assert sleeps[0] >= 5.0


def test_exhausted_and_permanent_errors_say_how_many_attempts_were_spent() -> None:
    """Transient to the end: attempts = GROQ_MAX_ATTEMPTS; permanent: 1, without a wait."""
    sleeps: list[float] = []
    always = ScriptedLLM([TransientLLMError("server", "503")] * 5)
    with pytest.raises(TransientLLMError) as exhausted:
        asyncio.run(caller(always, sleeps, groq_max_attempts=3).answer(FAST, "s", "u"))
    assert exhausted.value.attempts == 3
    assert len(always.requests) == 3
    assert len(sleeps) == 2

    sleeps.clear()
    refused = ScriptedLLM([PermanentLLMError("bad_request", "400", status=400)])
    with pytest.raises(PermanentLLMError) as permanent:
        asyncio.run(caller(refused, sleeps).answer(FAST, "s", "u"))
    assert permanent.value.attempts == 1
    assert sleeps == []
