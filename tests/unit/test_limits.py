"""Rate-limit arithmetic (Go durations, token estimates, GCRA) and the limiting decorator.

The decorator runs here on the in-memory limiter with an explicit clock, so waits are
measured in simulated seconds; ``tests/integration/test_rate_limiter.py`` runs it on Redis.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.adapters.rate_limit import MemoryLimiter, RateLimitedLLM, limiter_pause
from app.domain.errors import PermanentLLMError, Postponed, TransientLLMError
from app.domain.limits import (
    LimitTable,
    ModelLimits,
    RateLimitLesson,
    allowance,
    effective_limits,
    estimate_prompt_tokens,
    estimate_request_tokens,
    gcra_acquire,
    gcra_settle,
    lesson_from_headers,
    lesson_from_retry_after,
    parse_go_duration,
)
from app.domain.ports import Completion, CompletionRequest
from app.runtime.metrics import Metrics
from tests.support.fakes import ScriptedLLM

MODEL = "openai/gpt-oss-20b"

GROQ_HEADERS = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "250000",
    "x-ratelimit-remaining-requests": "14399",
    "x-ratelimit-remaining-tokens": "249840",
    "x-ratelimit-reset-requests": "6s",
    "x-ratelimit-reset-tokens": "38ms",
}


# -- Go durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("38ms", 0.038),
        ("1h0m0s", 3600.0),
        ("1h2m3.5s", 3723.5),
        ("1.5h", 5400.0),
        ("500us", 0.0005),
        ("500µs", 0.0005),
        ("250ns", 2.5e-7),
        ("0s", 0.0),
        ("0", 0.0),
        ("12", 12.0),  # retry-after style: bare seconds
        (" 7.66s ", 7.66),
    ],
)
def test_go_durations_from_groq_headers_are_read_in_seconds(text: str, seconds: float) -> None:
    """Groq's reset headers (`2m59.56s`, `7.66s`, `38ms`) and bare seconds parse exactly."""
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "abc", "-1s", "-3", "5x", "1m-2s", "s", "nan", "inf"])
def test_unreadable_durations_teach_nothing(text: str | None) -> None:
    """Malformed or negative durations are None, never a wrong number."""
    assert parse_go_duration(text) is None


# -- estimates ------------------------------------------------------------------------


def test_the_token_estimate_errs_high_against_a_four_characters_per_token_count() -> None:
    """An English/JSON prompt is estimated above 1 token per 4 characters (no early 429s)."""
    system = "You are a security analyst. Answer in JSON with summary, risk, recommendation."
    user = 'Event facts: {"agent_name": "Billing assistant", "tool_name": "shell.exec"}' * 5
    estimate = estimate_prompt_tokens(system, user)
    assert estimate >= math.ceil((len(system) + len(user)) / 4)
    assert estimate <= math.ceil((len(system) + len(user)) / 2)  # but not absurdly high


def test_multibyte_text_costs_more_than_its_character_count_suggests() -> None:
    """Text of 3-byte characters is estimated at about one token per character."""
    assert estimate_prompt_tokens("安全事件" * 100) >= 400


def test_a_request_reserves_its_whole_output_room() -> None:
    """The reservation is the prompt's estimate plus max_completion_tokens."""
    prompt = estimate_prompt_tokens("system", "user")
    assert estimate_request_tokens("system", "user", 1024) == prompt + 1024


# -- what headers teach ---------------------------------------------------------------


def test_groq_headers_give_the_token_buckets_refill_time_and_limit() -> None:
    """`x-ratelimit-reset-tokens: 38ms` → full in 0.038 s; TPM 250000; no block."""
    lesson = lesson_from_headers(GROQ_HEADERS)
    assert lesson.tokens_full_in == pytest.approx(0.038)
    assert lesson.tokens_limit == 250_000
    assert lesson.block_for == 0


def test_no_requests_left_blocks_until_the_requests_reset() -> None:
    """remaining-requests 0 with reset `2m59.56s` blocks every call for 179.56 s."""
    headers = {
        **GROQ_HEADERS,
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2m59.56s",
    }
    assert lesson_from_headers(headers).block_for == pytest.approx(179.56)


def test_without_a_reset_header_the_used_share_gives_the_refill_time() -> None:
    """remaining 6000 of 12000 tokens a minute, no reset header → full in 30 s."""
    headers = {"x-ratelimit-limit-tokens": "12000", "x-ratelimit-remaining-tokens": "6000"}
    assert lesson_from_headers(headers).tokens_full_in == pytest.approx(30.0)


def test_absent_or_garbled_headers_teach_nothing() -> None:
    """A server without rate-limit headers (Ollama) leaves the limiter as it is."""
    assert lesson_from_headers({}).empty
    assert lesson_from_headers({"x-ratelimit-reset-tokens": "soon"}).empty


def test_a_429_blocks_for_its_retry_after_or_a_second_without_one() -> None:
    """retry-after 7 → 7 s for everyone; a 429 without it still holds calls for 1 s."""
    assert lesson_from_retry_after(7.0).block_for == 7.0
    assert lesson_from_retry_after(None).block_for == 1.0


# -- configuration --------------------------------------------------------------------


def test_a_per_model_entry_overrides_only_the_fields_it_sets() -> None:
    """GROQ_MODEL_LIMITS {"tpm": 8000} keeps GROQ_RPM_LIMIT for that model."""
    table = LimitTable(
        default=ModelLimits(rpm=1000, tpm=250_000),
        per_model={"openai/gpt-oss-120b": ModelLimits(tpm=8000)},
    )
    assert table.for_model("openai/gpt-oss-120b") == ModelLimits(rpm=1000, tpm=8000)
    assert table.for_model(MODEL) == ModelLimits(rpm=1000, tpm=250_000)
    assert table.any
    assert not LimitTable().any


def test_a_learned_token_limit_only_tightens() -> None:
    """The provider's TPM from the headers is used when lower than, or without, a setting."""
    assert effective_limits(ModelLimits(tpm=250_000), 6000)["tpm"] == 6000
    assert effective_limits(ModelLimits(tpm=6000), 250_000)["tpm"] == 6000
    assert effective_limits(ModelLimits(rpm=30), 6000) == {
        "rpm": 30,
        "tpm": 6000,
        "rpd": 0,
        "tpd": 0,
    }


# -- GCRA -----------------------------------------------------------------------------


def test_gcra_lets_a_full_minutes_requests_through_then_paces_them() -> None:
    """RPM 60 at one instant: 60 calls go, the 61st waits 1 s, and goes 1 s later."""
    tats: dict[str, float] = {}
    limits = {"rpm": 60}
    for _ in range(60):
        verdict = gcra_acquire(tats, now=1000.0, tokens=0, limits=limits)
        assert verdict.acquired
        tats = verdict.tats
    refused = gcra_acquire(tats, now=1000.0, tokens=0, limits=limits)
    assert not refused.acquired
    assert refused.wait == pytest.approx(1.0)
    assert refused.tats == tats  # a refusal charges nothing
    assert gcra_acquire(tats, now=1001.0, tokens=0, limits=limits).acquired


def test_gcra_is_all_or_nothing_across_buckets() -> None:
    """Tokens short, requests plenty: the call waits and no bucket is charged."""
    limits = {"rpm": 1000, "tpm": 6000}
    first = gcra_acquire({}, now=0.0, tokens=5000, limits=limits)
    assert first.acquired
    second = gcra_acquire(first.tats, now=0.0, tokens=2000, limits=limits)
    assert not second.acquired
    assert second.wait == pytest.approx(10.0)  # 1000 tokens short at 100 tokens/s
    assert second.tats == first.tats
    assert second.allowance == {"rpm": pytest.approx(999.0), "tpm": pytest.approx(1000.0)}


def test_a_call_bigger_than_the_bucket_goes_when_the_bucket_is_full() -> None:
    """A 9000-token call under TPM 6000 is charged the whole bucket, never waits forever."""
    verdict = gcra_acquire({}, now=0.0, tokens=9000, limits={"tpm": 6000})
    assert verdict.acquired
    assert verdict.allowance["tpm"] == pytest.approx(0.0)


def test_a_block_holds_every_call_until_it_ends() -> None:
    """blocked_until in 30 s: even an empty bucket waits 30 s."""
    verdict = gcra_acquire({}, now=100.0, tokens=1, limits={"rpm": 60}, blocked_until=130.0)
    assert not verdict.acquired
    assert verdict.wait == pytest.approx(30.0)
    assert verdict.blocked_for == pytest.approx(30.0)


def test_settling_gives_back_what_the_estimate_over_counted() -> None:
    """Reserve 6000 of TPM 6000, use 1500: 4500 tokens are available again at once."""
    limits = {"tpm": 6000}
    tats = gcra_acquire({}, now=0.0, tokens=6000, limits=limits).tats
    assert allowance(tats["tpm"], 0.0, 6000, 60.0) == pytest.approx(0.0)
    settled = gcra_settle(tats, now=0.0, token_delta=1500 - 6000, limits=limits)
    assert allowance(settled["tpm"], 0.0, 6000, 60.0) == pytest.approx(4500.0)
    # giving back more than was taken never makes a bucket fuller than full
    overfull = gcra_settle(settled, now=0.0, token_delta=-100_000, limits=limits)
    assert allowance(overfull["tpm"], 0.0, 6000, 60.0) == pytest.approx(6000.0)


def test_a_reset_header_tightens_but_never_loosens() -> None:
    """reset-tokens 30 s on an idle bucket halves it; on a busier bucket it changes nothing."""
    limits = {"tpm": 6000}
    idle = gcra_settle(
        {}, now=0.0, token_delta=0, limits=limits, lesson=RateLimitLesson(tokens_full_in=30.0)
    )
    assert allowance(idle["tpm"], 0.0, 6000, 60.0) == pytest.approx(3000.0)
    busy = {"tpm": 50.0}
    kept = gcra_settle(
        busy, now=0.0, token_delta=0, limits=limits, lesson=RateLimitLesson(tokens_full_in=30.0)
    )
    assert kept == busy


class _GroqBucket:
    """Groq's meter as the fake server runs it: a level refilled evenly over a minute."""

    def __init__(self, limit: int) -> None:
        self.limit, self.level, self.at = limit, float(limit), 0.0

    def take(self, now: float, cost: float) -> None:
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / 60.0)
        self.at = now
        self.level -= cost


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=500),
    calls=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=0, max_value=600)),
        max_size=80,
    ),
)
def test_gcra_never_admits_what_a_groq_bucket_would_refuse(limit: int, calls) -> None:
    """Whatever the timing and sizes, every call GCRA admits fits Groq's token bucket."""
    tats: dict[str, float] = {}
    bucket = _GroqBucket(limit)
    now = 0.0
    for gap, tokens in calls:
        now += gap
        verdict = gcra_acquire(tats, now=now, tokens=tokens, limits={"tpm": limit})
        if verdict.acquired:
            tats = verdict.tats
            bucket.take(now, min(tokens, limit))
            assert bucket.level >= -1e-6
        else:
            assert verdict.wait > 0


# -- the decorator on the in-memory limiter ---------------------------------------------


class SimClock:
    """Simulated time: ``sleep`` moves it forward and records each wait."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class HeaderLLM(ScriptedLLM):
    """A scripted model whose answers carry usage and rate-limit headers."""

    def __init__(self, *args, headers: dict[str, str] | None = None, usage: int = 100, **kw):
        super().__init__(*args, **kw)
        self.headers = headers or {}
        self.usage = usage

    async def complete(self, request: CompletionRequest) -> Completion:
        answer = await super().complete(request)
        return Completion(
            text=answer.text,
            model=answer.model,
            prompt_tokens=self.usage - 10,
            completion_tokens=10,
            headers=self.headers,
        )


def request(max_tokens: int = 100, *, priority: int = 0, user: str = "facts") -> CompletionRequest:
    return CompletionRequest(
        model=MODEL,
        system="Answer in JSON.",
        user=user,
        max_completion_tokens=max_tokens,
        priority=priority,
    )


def limited(inner, limits: ModelLimits, clock: SimClock, **kwargs) -> RateLimitedLLM:
    return RateLimitedLLM(
        inner,
        MemoryLimiter(LimitTable(default=limits), clock=clock),
        metrics=kwargs.pop("metrics", Metrics()),
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_calls_over_the_rpm_wait_for_capacity_instead_of_failing() -> None:
    """RPM 2: three calls at once all answer; the third waited 30 s and was counted."""
    clock, metrics = SimClock(), Metrics()
    inner = ScriptedLLM()
    llm = limited(inner, ModelLimits(rpm=2), clock, metrics=metrics)
    for _ in range(3):
        await llm.complete(request())
    assert len(inner.requests) == 3
    assert sum(clock.sleeps) == pytest.approx(30.0, abs=3.5)  # plus up to 10% jitter
    assert sample(metrics, "acp_groq_rate_limit_avoided_total", model=MODEL) == 1
    assert sample(metrics, "acp_groq_limiter_wait_seconds_count", model=MODEL) == 3
    assert sample(metrics, "acp_groq_limiter_wait_seconds_sum", model=MODEL) >= 30.0


async def test_usage_gives_back_the_over_reserved_tokens() -> None:
    """TPM 1200, reserve ~1100 per call, use 100: the next call goes without waiting."""
    clock = SimClock()
    llm = limited(HeaderLLM(usage=100), ModelLimits(tpm=1200), clock)
    await llm.complete(request(max_tokens=1000))
    await llm.complete(request(max_tokens=1000))
    assert clock.sleeps == []


async def test_headers_tighten_the_budget_for_the_next_call() -> None:
    """An answer saying "no requests left, reset in 2m" holds the next call ~120 s."""
    clock, metrics = SimClock(), Metrics()
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2m0s"}
    inner = HeaderLLM(headers=headers)
    llm = limited(inner, ModelLimits(rpm=1000), clock, metrics=metrics)
    await llm.complete(request())
    assert llm.paused_for() == pytest.approx(120.0)  # over the 60 s threshold: a pause
    assert limiter_pause(llm) == pytest.approx(120.0)
    assert sample(metrics, "acp_groq_limiter_paused_seconds") == pytest.approx(120.0)
    inner.headers = {}
    await llm.complete(request())
    assert sum(clock.sleeps) >= 120.0
    assert llm.paused_for() == 0.0  # resumed


async def test_a_429_holds_every_later_call_for_its_retry_after() -> None:
    """The 429 is re-raised (the service retries) and the next call waits out retry-after."""
    clock, metrics = SimClock(), Metrics()
    inner = ScriptedLLM([TransientLLMError("rate_limit", "slow down", status=429, retry_after=7)])
    llm = limited(inner, ModelLimits(rpm=1000), clock, metrics=metrics)
    with pytest.raises(TransientLLMError):
        await llm.complete(request())
    await llm.complete(request())
    assert sum(clock.sleeps) >= 7.0
    assert sample(metrics, "acp_groq_rate_limit_responses_total", model=MODEL) == 1
    assert sample(metrics, "acp_groq_rate_limit_avoided_total", model=MODEL) == 1


async def test_other_errors_pass_through_without_touching_the_budget() -> None:
    """A 400 is re-raised as is; it neither blocks nor counts as a 429."""
    clock, metrics = SimClock(), Metrics()
    inner = ScriptedLLM([PermanentLLMError("bad_request", "no", status=400)])
    llm = limited(inner, ModelLimits(rpm=1000), clock, metrics=metrics)
    with pytest.raises(PermanentLLMError):
        await llm.complete(request())
    await llm.complete(request())
    assert clock.sleeps == []
    assert sample(metrics, "acp_groq_rate_limit_responses_total", model=MODEL) == 0


async def test_an_urgent_call_goes_before_the_calls_already_waiting_for_capacity() -> None:
    """RPM 1: three low calls wait in line when a critical one comes; it goes second."""
    clock = SimClock()
    inner = ScriptedLLM()
    llm = limited(inner, ModelLimits(rpm=1), clock)
    await llm.complete(request(user="first"))  # the minute's only request
    calls = [llm.complete(request(priority=3, user=f"low {n}")) for n in (1, 2, 3)]
    calls.append(llm.complete(request(priority=0, user="critical")))
    await asyncio.gather(*calls)
    # "low 1" was already asking the limiter (the line's head) when the critical call came.
    order = [r.user for r in inner.requests]
    assert order == ["first", "low 1", "critical", "low 2", "low 3"]


async def test_calls_of_one_priority_keep_their_arrival_order() -> None:
    clock = SimClock()
    inner = ScriptedLLM()
    llm = limited(inner, ModelLimits(rpm=1), clock)
    await asyncio.gather(*(llm.complete(request(priority=2, user=str(n))) for n in range(5)))
    assert [r.user for r in inner.requests] == ["0", "1", "2", "3", "4"]


async def test_a_call_cancelled_in_line_neither_runs_nor_holds_up_the_others() -> None:
    """One call leaves the line while waiting, the head leaves while asking: the rest go."""
    clock = SimClock()
    inner = ScriptedLLM()
    llm = limited(inner, ModelLimits(rpm=1), clock)
    await llm.complete(request(user="first"))
    head = asyncio.create_task(llm.complete(request(user="head")))
    waiting = [asyncio.create_task(llm.complete(request(user=str(n)))) for n in range(3)]
    await asyncio.sleep(0)  # everyone in line; "head" is asking the limiter
    waiting[1].cancel()
    head.cancel()
    await asyncio.wait_for(asyncio.gather(waiting[0], waiting[2]), 5.0)
    assert [r.user for r in inner.requests] == ["first", "0", "2"]
    assert head.cancelled()
    assert waiting[1].cancelled()


async def test_a_call_waiting_when_the_worker_stops_is_postponed() -> None:
    """Stopping during a long wait raises Postponed (the entry stays pending), promptly."""
    stopping = asyncio.Event()
    limiter = MemoryLimiter(LimitTable(default=ModelLimits(rpm=1)))
    llm = RateLimitedLLM(ScriptedLLM(), limiter, metrics=Metrics(), stopping=stopping)
    await llm.complete(request())  # the minute's only request
    waiting = asyncio.create_task(llm.complete(request()))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stopping.set()
    with pytest.raises(Postponed):
        await asyncio.wait_for(waiting, 2.0)


async def test_allowance_gauges_show_what_is_left() -> None:
    """After one call under RPM 10 / TPM 10000 the gauges say 9 requests and the tokens left."""
    clock, metrics = SimClock(), Metrics()
    llm = limited(HeaderLLM(usage=500), ModelLimits(rpm=10, tpm=10_000), clock, metrics=metrics)
    await llm.complete(request())
    assert sample(metrics, "acp_groq_limiter_allowance", model=MODEL, kind="rpm") == pytest.approx(
        9.0
    )
    assert sample(metrics, "acp_groq_limiter_allowance", model=MODEL, kind="tpm") == pytest.approx(
        9500.0
    )


def test_a_429_teaches_its_headers_too():
    """A 429's x-ratelimit-* headers tighten the limiter like an answer's would."""
    from app.domain.limits import lesson_from_retry_after

    lesson = lesson_from_retry_after(
        2.0,
        {
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-reset-tokens": "7.66s",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2m59.56s",
        },
    )
    assert lesson.block_for == pytest.approx(179.56)
    assert lesson.tokens_full_in == pytest.approx(7.66)
    assert lesson.tokens_limit == 6000
    assert lesson_from_retry_after(3.0).block_for == 3.0
