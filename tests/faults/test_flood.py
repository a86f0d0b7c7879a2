"""Under a flood (EVENT_ORDER=priority): urgent events first, every tenant served, nothing lost.

Real worker processes (``faststream run app:app``), a private redis-server, the fake Groq
process. One tenant floods the stream with low-severity events; the events that matter
come after it. How soon they are answered is counted in the flood's events answered
meanwhile: at a 250 ms model and 32 slots the model answers 128 events a second, so
"within 2 s" is "before 256 more of the flood": a bound the machine's speed does not move
(the seconds are printed; ``python -m bench --scenario flood`` measures them).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.domain.keys import Keys
from app.domain.scheduling import SEVERITY_ORDER
from tests.faults.harness import (
    GROUP,
    STREAM,
    RedisClient,
    Workers,
    events,
    outcomes,
    wait_until,
)

pytestmark = pytest.mark.faults

FAKE_LATENCY = 0.25  # seconds per model answer (tests/faults/conftest.py)
SLOTS = 32
FLOOD = 3000
WORKER_ENV = {
    "worker_concurrency": SLOTS,
    "insight_budget_per_hour_per_tenant": 1_000_000,
    "event_order": "priority",
}


def waiting(client: RedisClient) -> int:
    return sum(client.zcard(Keys.sched_since(severity)) for severity in SEVERITY_ORDER)


def answered(client: RedisClient, tenant: str) -> int:
    return int(client.zcard(Keys.by_tenant(tenant)))


def flood_waiting(client: RedisClient, workers: Workers, **settings: Any) -> list[str]:
    """One worker, and the flood written and waiting in its scheduler."""
    workers.start("w-flood", **settings)
    flood = events(client, FLOOD, prefix="flood", tenant="noisy")
    wait_until(lambda: read_all(client), within=60, what="the flood read")
    assert waiting(client) > FLOOD / 2, "most of the flood waits"
    return flood


def read_all(client: RedisClient) -> bool:
    """Every entry of the stream was delivered to the group (the flood read and waiting)."""
    return bool(client.xinfo_groups(STREAM)[0]["lag"] == 0)


def until_insights(client: RedisClient, event_ids: list[str], within: float = 60) -> float:
    """Wait for the insights of ``event_ids``; the seconds it took."""
    began = time.monotonic()
    wait_until(
        lambda: outcomes(client, event_ids)["insights"] == set(event_ids),
        within=within,
        step=0.02,
        what="the insights",
    )
    return time.monotonic() - began


def test_critical_events_overtake_a_flood_of_low_ones(client, workers):
    """Behind 3,000 waiting low events of one tenant, 5 critical ones of another are
    answered within 2 s of the model's time (before 256 more of the flood)."""
    flood_waiting(client, workers)
    before = answered(client, "noisy")
    critical = events(client, 5, prefix="urgent", tenant="quiet", severity="critical")
    took = until_insights(client, critical)
    overtaken = answered(client, "noisy") - before
    print(f"5 critical answered in {took:.2f} s; meanwhile {overtaken} of the flood")
    assert overtaken <= 256, f"the critical events waited for {overtaken} of the flood"
    assert answered(client, "noisy") < FLOOD / 2  # the flood was still waiting


def test_critical_events_overtake_when_the_rate_limiter_is_the_bottleneck(client, workers, fake):
    """GROQ_RPM_LIMIT=1200 (20 calls a second), a 50 ms model, one model for every
    severity (the critical calls queue at the same limiter as the flood's): the critical
    events are answered within 5 s of the limiter's pace (before 100 more of the flood)."""
    fake.script(latency=0.05)
    flood_waiting(client, workers, groq_rpm_limit=1200, deep_severities="")
    # The limiter lets a minute's worth through at once: past that burst, it holds the pace.
    wait_until(lambda: answered(client, "noisy") >= 1250, within=60, what="the burst spent")
    before = answered(client, "noisy")
    critical = events(client, 5, prefix="urgent", tenant="quiet", severity="critical")
    took = until_insights(client, critical)
    overtaken = answered(client, "noisy") - before
    print(f"5 critical answered in {took:.2f} s; meanwhile {overtaken} of the flood")
    assert overtaken <= 100, f"the critical events waited for {overtaken} of the flood"


def test_a_quiet_tenant_is_answered_before_the_flooding_ones_200th(client, workers, fake):
    """3,000 high events of one tenant wait, then 20 of another: those 20 are all answered
    before the first tenant's 200th."""
    fake.script(script=[{"hold": True}] * SLOTS)  # the first calls wait: the flood waits too
    workers.start("w-fair")
    events(client, FLOOD, prefix="flood", tenant="noisy", severity="high")
    wait_until(lambda: waiting(client) >= FLOOD - SLOTS, within=60, what="the flood waiting")
    quiet = events(client, 20, prefix="quiet", tenant="quiet", severity="high")
    wait_until(lambda: waiting(client) >= FLOOD - SLOTS + 20, within=30, what="quiet waiting")
    fake.script(release=True)
    until_insights(client, quiet)
    flooded = answered(client, "noisy")
    print(f"the quiet tenant's 20 answered when the flooding one had {flooded}")
    assert flooded < 200


def test_two_processes_keep_the_order(client, workers):
    """Two workers share the scheduler: once more urgent events wait, neither hands out a
    less urgent one before them but for the calls already under way (16 slots in all)."""
    for name in ("w-a", "w-b"):
        workers.start(name, worker_concurrency=8)
    events(client, 800, prefix="flood", tenant="noisy")
    wait_until(lambda: waiting(client) >= 700, within=60, what="the flood waiting")
    high = events(client, 30, prefix="high", tenant="other", severity="high")
    critical = events(client, 10, prefix="urgent", tenant="quiet", severity="critical")
    until_insights(client, high + critical)
    log = workers.fake.agents_requested()
    last_urgent = max(log.index(name) for name in high + critical)
    since_high = log[log.index("high-0") : last_urgent + 1]
    lows = [name for name in since_high if name.startswith("flood")]
    assert len(lows) <= 16, f"{len(lows)} low events went before the urgent ones"
    last_critical = max(log.index(name) for name in critical)
    since_critical = log[log.index("urgent-0") : last_critical + 1]
    highs = [name for name in since_critical if name.startswith("high")]
    assert len(highs) <= 16, f"{len(highs)} high events went before the critical ones"


def test_kill_9_mid_flood_loses_nothing_and_charges_nothing_twice(client, workers, fake):
    """kill -9 with jobs running and waiting, another worker finishes: every event has one
    insight, announced once; each tenant's counter counted each of its events once."""
    fake.script(latency=0.25)  # slots scarce: what finds none waits in the scheduler
    env = {"worker_concurrency": 16, "claim_idle_seconds": 2}
    first = workers.start("w-killed", **env)
    noisy = events(client, 400, prefix="flood", tenant="noisy")
    quiet = events(client, 40, prefix="quiet", tenant="quiet", severity="high")
    wait_until(lambda: answered(client, "noisy") >= 60, within=60, what="progress")
    first.kill()
    state = outcomes(client, noisy + quiet)
    assert state["running"] > 0, "the kill leaves jobs running"
    assert state["jobs"] > state["running"], "and others waiting"
    workers.start("w-finisher", **env)
    state = wait_until(
        lambda: (
            (s := outcomes(client, noisy + quiet))["jobs"] == 0
            and s["pending"] == 0
            and len(s["insights"]) == 440
            and s
        ),
        within=90,
        what="every event enriched",
    )
    assert state["dead"] == []
    assert client.get(Keys.rate_limit("noisy")) == b"400"
    assert client.get(Keys.rate_limit("quiet")) == b"40"
    assert client.xlen(Keys.INSIGHTS_STREAM) == 440  # each announced once
    assert client.xinfo_groups(STREAM)[0]["lag"] == 0
    assert client.xpending(STREAM, GROUP)["pending"] == 0


def test_kill_9_while_looking_ahead_loses_nothing_and_charges_nothing_twice(client, workers, fake):
    """20,000 unread low events of one tenant (its budget: 100), then 40 critical ones of
    another: the look-ahead schedules the critical ones long before the group reaches them;
    kill -9 while it has, another worker finishes. Every critical event has one insight,
    announced once; the quiet tenant's counter counted each once; the flooding tenant got
    exactly its budget; every look-ahead mark met its delivery."""
    fake.script(latency=0.05)
    env = {
        "worker_concurrency": 16,
        "claim_idle_seconds": 2,
        "insight_budget_per_hour_per_tenant": 100,
    }
    noisy = events(client, 20_000, prefix="flood", tenant="noisy")
    quiet = events(client, 40, prefix="quiet", tenant="quiet", severity="critical")
    first = workers.start("w-killed", **env)
    wait_until(lambda: answered(client, "quiet") >= 10, within=60, what="criticals answered")
    lag = client.xinfo_groups(STREAM)[0]["lag"]
    first.kill()
    assert lag > 2000, "the critical events were answered long before the group reached them"
    workers.start("w-finisher", **env)
    state = wait_until(
        lambda: (
            (s := outcomes(client, noisy + quiet))["jobs"] == 0
            and s["pending"] == 0
            and client.xinfo_groups(STREAM)[0]["lag"] == 0
            and s
        ),
        within=120,
        what="every entry handled",
    )
    assert state["dead"] == []
    assert set(quiet) <= state["insights"]
    assert answered(client, "noisy") == 100  # its budget, exactly
    assert client.get(Keys.rate_limit("quiet")) == b"40"
    assert client.xlen(Keys.INSIGHTS_STREAM) == 140  # each insight announced once
    assert client.scard(Keys.SCHED_AHEAD) == 0
