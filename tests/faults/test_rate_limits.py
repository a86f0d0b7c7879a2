"""Two real worker processes against a loopback Groq that enforces a small RPM and TPM.

The fake meters every model as Groq does (token buckets refilled over a minute, real
``x-ratelimit-*`` headers, 429 + ``retry-after``) and counts its 429s. The same backlog is
run twice with the same settings, once with the shared limiter and once without:

* with it, the two processes together stay under the limits: at most a handful of 429s
  (in practice none), and every event is enriched;
* without it, the processes only react to 429s: many more (measured, printed).

Run: ``.venv/bin/pytest tests/faults/test_rate_limits.py -m faults -s`` (about a minute).
"""

from __future__ import annotations

import re
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass

import pytest

from tests.faults.harness import (
    FakeGroqProcess,
    RedisTarget,
    Workers,
    events,
    outcomes,
    wait_until,
)
from tests.support.redis_server import free_port

pytestmark = pytest.mark.faults

EVENTS = 45
RPM, TPM = 40, 6000  # the fake's limits: a free-tier-sized budget per model
LATENCY = 0.2
# An event's call costs ~180 tokens on the fake (prompt ~150, answer ~30): 6000 TPM is
# ~33 calls in the first burst, then one every ~1.8 s, so 45 events need ~25 s.
WORKER_ENV = {
    "worker_concurrency": 32,
    "groq_max_completion_tokens": 128,
    "groq_max_attempts": 3,
    # Kept out of the comparison: an open breaker would hide 429s behind its cooldown.
    "breaker_failure_threshold": 1000,
}


@dataclass
class RunResult:
    responses_429: int
    enriched: int
    dead: int
    requests: int
    avoided: float  # calls that waited for the limiter (the workers' metric)
    received: float  # 429s the workers counted (acp_groq_api_errors_total{rate_limit})
    seconds: float


def _metric(port: int, name: str, labels: str = "[^}]*") -> float:
    """The sum of a metric's samples (matching ``labels``) on one worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = rf"^{name}(?:{{{labels}}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def run(redis_target: RedisTarget, *, limited: bool) -> RunResult:
    """The backlog through two worker processes, each run with a fresh fake Groq (its
    buckets full, its counts at zero) on an emptied Redis; what the fake and Redis saw."""
    limits = {"groq_rpm_limit": RPM, "groq_tpm_limit": TPM} if limited else {}
    ports = [free_port(), free_port()]
    with (
        closing(redis_target.connect()) as client,
        FakeGroqProcess(latency=LATENCY, rpm=RPM, tpm=TPM) as fake,
        Workers(redis_target, fake, WORKER_ENV) as workers,
    ):
        client.flushdb()
        ids = events(client, EVENTS)
        began = time.monotonic()
        for n, port in enumerate(ports):
            name = f"{'limited' if limited else 'unlimited'}-{n}"
            workers.start(name, metrics_port=port, **limits)

        def settled():
            state = outcomes(client, ids)
            done = len(state["insights"]) + len(state["dead"])
            return state if done == EVENTS and state["pending"] == 0 else None

        state = wait_until(settled, within=75, step=0.25, what="every event to reach an outcome")
        seconds = time.monotonic() - began
        stats = fake.stats()
        avoided = sum(_metric(p, "acp_groq_rate_limit_avoided_total") for p in ports)
        received = sum(
            _metric(p, "acp_groq_api_errors_total", 'error_type="rate_limit"') for p in ports
        )
        return RunResult(
            responses_429=stats["statuses"].get("429", 0),
            enriched=len(state["insights"]),
            dead=len(state["dead"]),
            requests=stats["requests"],
            avoided=avoided,
            received=received,
            seconds=round(seconds, 1),
        )


def test_two_workers_with_the_shared_limiter_stay_under_the_providers_limits(redis_target):
    """With the limiter: ≤ a handful of 429s and every event enriched; without: many more."""
    with_limiter = run(redis_target, limited=True)
    without = run(redis_target, limited=False)
    print(f"\n429s with the shared limiter: {with_limiter}\n429s without it:             {without}")
    assert with_limiter.enriched == EVENTS
    assert with_limiter.dead == 0
    assert with_limiter.responses_429 <= 3
    assert with_limiter.received == with_limiter.responses_429  # the workers saw the same
    assert without.received == without.responses_429
    assert with_limiter.avoided > 0  # calls waited instead of going out over the limit
    # informative: the same two processes reacting only to 429s
    assert without.responses_429 > with_limiter.responses_429
