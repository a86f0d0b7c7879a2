"""GROQ_SERVICE_TIERS: which tier each severity's requests name, and what a full flex does.

The model call runs on a scripted LLM: a 498 from flex is no failure (no attempt spent,
no breaker count); an urgent event's request goes again at once on on_demand, another
event's waits (in place, or raising ``WaitForCapacity`` for the scheduler to hold it).
"""

from __future__ import annotations

import asyncio

import pytest

from app.domain.breaker import CircuitBreaker
from app.domain.errors import Postponed, TransientLLMError, WaitForCapacity
from app.domain.events import Severity
from app.domain.limits import LimitTable, ModelLimits, limit_bucket
from app.domain.routing import ServiceTier, parse_service_tiers
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState
from app.service import model_calls
from app.service.model_calls import ModelCaller
from app.settings import Settings, SettingsError, load_settings
from tests.support.fakes import ScriptedLLM

FAST = "openai/gpt-oss-20b"
TIERS = "critical=on_demand,high=flex,medium=flex,low=flex"


def flex_full() -> TransientLLMError:
    return TransientLLMError("capacity", "Flex tier capacity exceeded.", status=498)


def caller(llm: ScriptedLLM, **overrides: object) -> tuple[ModelCaller, Metrics, WorkerState]:
    settings = Settings.model_validate(
        {"groq_api_key": "gsk_test", "groq_service_tiers": TIERS, **overrides}
    )
    metrics, state = Metrics(), WorkerState()

    async def sleep(_seconds: float) -> None:
        return None

    breaker = CircuitBreaker(threshold=1, cooldown=60.0)
    model = ModelCaller(
        settings, llm=llm, metrics=metrics, state=state, breaker=breaker, sleep=sleep
    )
    return model, metrics, state


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def quick_flex_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_BASE_SECONDS", 0.001)
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_MAX_SECONDS", 0.004)


# -- the setting -------------------------------------------------------------------------


def test_the_setting_maps_severities_to_tiers() -> None:
    assert parse_service_tiers(" Critical = ON_DEMAND , low=flex,") == {
        Severity.CRITICAL: ServiceTier.ON_DEMAND,
        Severity.LOW: ServiceTier.FLEX,
    }
    assert parse_service_tiers("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("critical=fast", "'fast' is not a service tier"),
        ("urgent=flex", "'urgent' is not a severity"),
        ("low", "'low' is not severity=tier"),
        ("low=flex,low=auto", "low is given twice"),
    ],
)
def test_a_bad_setting_stops_the_worker_naming_it(
    monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    monkeypatch.setenv("GROQ_SERVICE_TIERS", text)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert f"GROQ_SERVICE_TIERS: {problem}" in str(refused.value)


def test_an_openai_compatible_server_has_no_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "openai-compatible")
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GROQ_SERVICE_TIERS", "low=flex")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "GROQ_SERVICE_TIERS" in str(refused.value)


def test_each_tier_with_limits_of_its_own_counts_against_its_own_bucket() -> None:
    assert limit_bucket(FAST, None) == FAST
    assert limit_bucket(FAST, ServiceTier.ON_DEMAND) == FAST
    assert limit_bucket(FAST, ServiceTier.AUTO) == FAST  # on-demand limits first
    assert limit_bucket(FAST, ServiceTier.FLEX) == f"{FAST}@flex"
    table = LimitTable(
        default=ModelLimits(rpm=30, tpm=8000),
        per_model={f"{FAST}@performance": ModelLimits(rpm=500)},
    )
    assert table.for_model(f"{FAST}@flex") == ModelLimits(rpm=300, tpm=80_000)
    assert table.for_model(f"{FAST}@performance") == ModelLimits(rpm=500, tpm=8000)


# -- the model call ----------------------------------------------------------------------


async def test_each_severity_names_its_tier_and_none_is_sent_unmapped() -> None:
    llm = ScriptedLLM()
    model, metrics, _ = caller(llm, groq_service_tiers="low=flex")
    await model.answer(FAST, "s", "u", severity=Severity.LOW)
    await model.answer(FAST, "s", "u", severity=Severity.CRITICAL)
    await model.answer(FAST, "s", "u")  # no event's urgency (the batch lane)
    assert [r.service_tier for r in llm.requests] == [ServiceTier.FLEX, None, None]
    requests = "acp_groq_service_tier_requests_total"
    assert sample(metrics, requests, service_tier="flex", result="answered") == 1
    assert sample(metrics, requests, service_tier="default", result="answered") == 2


async def test_an_urgent_event_refused_by_flex_goes_again_at_once_on_demand() -> None:
    llm = ScriptedLLM([flex_full()])
    model, metrics, _ = caller(llm, groq_max_attempts=1)
    answer = await model.answer(FAST, "s", "u", severity=Severity.HIGH)
    assert [r.service_tier for r in llm.requests] == [ServiceTier.FLEX, ServiceTier.ON_DEMAND]
    assert answer.attempts == 1  # the refusal spent none of GROQ_MAX_ATTEMPTS=1
    assert sample(metrics, "acp_groq_service_tier_fallbacks_total", severity="high") == 1
    requests = "acp_groq_service_tier_requests_total"
    assert sample(metrics, requests, service_tier="flex", result="capacity_exceeded") == 1
    assert sample(metrics, requests, service_tier="on_demand", result="answered") == 1
    assert sample(metrics, "acp_groq_breaker_state") == 0  # closed: flex said nothing of it


async def test_another_event_waits_for_flex_without_spending_attempts() -> None:
    """Five refusals in a row, then flex answers: one answer, on flex, attempt 1; no dead
    letter could have come of it (GROQ_MAX_ATTEMPTS=1), the breaker stayed closed."""
    llm = ScriptedLLM([flex_full()] * 5)
    model, metrics, _ = caller(llm, groq_max_attempts=1)
    answer = await model.answer(FAST, "s", "u", severity=Severity.LOW)
    assert answer.attempts == 1
    assert [r.service_tier for r in llm.requests] == [ServiceTier.FLEX] * 6
    assert sample(metrics, "acp_groq_capacity_waits_total", severity="low") == 5
    assert sample(metrics, "acp_groq_breaker_state") == 0


async def test_a_scheduled_event_is_handed_back_to_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_in_place=False: WaitForCapacity, its delay growing with the refusals in a row
    and starting over once flex answers."""
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_BASE_SECONDS", 1.0)
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_MAX_SECONDS", 30.0)
    llm = ScriptedLLM([flex_full()] * 3)
    model, _, _ = caller(llm)
    delays = []
    for _ in range(3):
        with pytest.raises(WaitForCapacity) as wait:
            await model.answer(FAST, "s", "u", severity=Severity.MEDIUM, wait_in_place=False)
        delays.append(wait.value.retry_in)
    assert [0.5 <= delays[0] <= 1.0, 1.0 <= delays[1] <= 2.0, 2.0 <= delays[2] <= 4.0] == [True] * 3
    await model.answer(FAST, "s", "u", severity=Severity.MEDIUM, wait_in_place=False)
    llm.script.append(flex_full())
    with pytest.raises(WaitForCapacity) as wait:
        await model.answer(FAST, "s", "u", severity=Severity.MEDIUM, wait_in_place=False)
    assert wait.value.retry_in <= 1.0  # flex answered in between: the backoff started over


async def test_a_wait_for_flex_ends_when_the_worker_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_BASE_SECONDS", 30.0)
    monkeypatch.setattr(model_calls, "_FLEX_WAIT_MAX_SECONDS", 30.0)
    llm = ScriptedLLM([flex_full()])
    model, _, state = caller(llm)
    waiting = asyncio.create_task(model.answer(FAST, "s", "u", severity=Severity.LOW))
    await asyncio.sleep(0.05)
    state.stopping.set()
    with pytest.raises(Postponed):
        await asyncio.wait_for(waiting, 2.0)
