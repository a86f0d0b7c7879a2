"""EVENT_ORDER=priority on a real Redis: who reaches the model first, and nothing lost.

The worker runs in this process against the loopback Groq, whose answers are held
(``{"hold": true}``) while the slots are full, so the order in which waiting events reach
the model is the scheduler's, read back from the fake's request log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from app.adapters.redis_batch import GroupCommit
from app.adapters.redis_scheduler import RedisScheduler
from app.adapters.redis_store import RedisInsightStore
from app.bootstrap import Worker, build_worker
from app.cli.status import collect_status
from app.domain.events import AuditEvent
from app.domain.keys import Keys
from app.domain.ports import Admission, EntryRef, Received
from app.domain.scheduling import SEVERITY_ORDER, schedule_request
from app.operations.http import GroupSampler
from app.runtime.metrics import Metrics
from tests.conftest import running
from tests.support.fake_groq import FakeGroq

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes("standalone")]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"


def event(event_id: str, tenant: str = "acme", severity: str = "low") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "agent_id": "agent-a",
        "agent_name": event_id,  # the fake's request log tells events apart by it
        "tool_name": "shell.exec",
        "decision": "deny",
        "severity": severity,
        "timestamp": 1_795_573_200,
    }


async def write(redis: Any, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        await redis.xadd(STREAM, {"payload": json.dumps(body)})


def asked(fake: FakeGroq) -> list[str]:
    """The events the model was asked about, in the order it was asked."""
    order = []
    for request in fake.requests:
        user = request["messages"][1]["content"]
        order.append(json.loads(user[user.index("{") : user.rindex("}") + 1])["agent_name"])
    return order


async def until(condition: Callable[[], Any], *, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await _value(condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def waiting(redis: Any) -> int:
    return sum([await redis.zcard(Keys.sched_since(s)) for s in SEVERITY_ORDER])


def enriched(worker: Worker, count: int) -> bool:
    return consumed(worker, "enriched") == count


def consumed(worker: Worker, result: str) -> float:
    return float(worker.metrics.events_consumed.labels(result=result)._value.get())


def worker_of(make_settings: Any, fake: FakeGroq, **settings: Any) -> Worker:
    return build_worker(
        make_settings(groq_base_url=fake.base_url, **settings), configure_logs=False
    )


async def test_an_idle_worker_runs_events_at_once_and_never_schedules(
    redis, fake_groq, make_settings
):
    """No backlog: every event takes a free slot at once; the scheduler stays empty."""
    worker = worker_of(make_settings, fake_groq, worker_concurrency=8)
    async with running(worker.app):
        for n in range(1, 6):
            await write(redis, event(f"evt-{n}"))
            await until(partial(enriched, worker, n), what="the insight")
    assert await redis.exists(Keys.SCHED_JOBS, Keys.SCHED_CLOCK) == 0


async def test_urgent_events_reach_the_model_before_waiting_ones_of_lower_severity(
    redis, fake_groq, make_settings
):
    """Two slots busy, ten low events of one tenant waiting, then three critical of
    another: the critical ones go next, then the low ones in their order."""
    fake_groq.script.extend({"hold": True} for _ in range(2))
    worker = worker_of(make_settings, fake_groq, worker_concurrency=2)
    lows = [event(f"low-{n}") for n in range(10)]
    criticals = [event(f"crit-{n}", "globex", "critical") for n in range(3)]
    async with running(worker.app):
        await write(redis, *lows)
        await until(lambda: fake_groq.stats.in_flight == 2, what="both slots busy")
        await write(redis, *criticals)
        await until(lambda: waiting(redis), what="the events waiting")
        await until(lambda: _all_scheduled(redis, 11), what="every event read and scheduled")
        fake_groq.release()
        await until(lambda: consumed(worker, "enriched") == 13, what="every insight")
    order = asked(fake_groq)
    assert order[:2] == ["low-0", "low-1"]  # they had the slots
    assert order[2:5] == ["crit-0", "crit-1", "crit-2"]
    assert order[5:] == [f"low-{n}" for n in range(2, 10)]
    assert await redis.exists(Keys.SCHED_JOBS) == 0  # every job ended with its insight


async def _all_scheduled(redis: Any, count: int) -> bool:
    return bool(await waiting(redis) == count)


async def test_tenants_with_work_share_the_calls_and_keep_their_order(
    redis, fake_groq, make_settings
):
    """One slot; 30 high events of acme wait, then 6 of globex: they alternate, globex's
    six all answered before acme's eighth; each tenant's events in their order."""
    fake_groq.script.append({"hold": True})
    worker = worker_of(make_settings, fake_groq, worker_concurrency=1)
    async with running(worker.app):
        await write(redis, *(event(f"acme-{n:02d}", "acme", "high") for n in range(31)))
        await until(lambda: _all_scheduled(redis, 30), what="acme's events waiting")
        await write(redis, *(event(f"globex-{n}", "globex", "high") for n in range(6)))
        await until(lambda: _all_scheduled(redis, 36), what="globex's events waiting")
        fake_groq.release()
        await until(lambda: consumed(worker, "enriched") == 37, what="every insight")
    order = asked(fake_groq)[1:]  # after the one that had the slot
    assert [n for n in order if n.startswith("acme")] == [f"acme-{n:02d}" for n in range(1, 31)]
    assert [n for n in order if n.startswith("globex")] == [f"globex-{n}" for n in range(6)]
    last_globex = max(i for i, name in enumerate(order) if name.startswith("globex"))
    assert last_globex <= 12, order[:14]  # every other call, from globex's arrival on


async def test_tenant_weights_share_the_calls_in_proportion(redis, fake_groq, make_settings):
    """acme weighs 2, globex 1, 40 events waiting each: of the first 30 calls, 20 and 10."""
    fake_groq.script.append({"hold": True})
    worker = worker_of(make_settings, fake_groq, worker_concurrency=1, tenant_weights={"acme": 2})
    async with running(worker.app):
        await write(redis, event("first", "other"))
        await until(lambda: fake_groq.stats.in_flight == 1, what="the slot busy")
        bodies = [event(f"{t}-{n}", t) for n in range(40) for t in ("acme", "globex")]
        await write(redis, *bodies)
        await until(lambda: _all_scheduled(redis, 80), what="every event waiting")
        fake_groq.release()
        await until(lambda: consumed(worker, "enriched") == 81, what="every insight", within=30)
    first_30 = asked(fake_groq)[1:31]
    assert sum(1 for name in first_30 if name.startswith("acme")) == 20
    assert sum(1 for name in first_30 if name.startswith("globex")) == 10


async def test_scheduled_events_are_charged_once_and_their_copies_are_duplicates(
    redis, fake_groq, make_settings
):
    """Budget 4: four events wait and are enriched, the fifth is rate-limited at once;
    copies of a waiting event are duplicates; the tenant's counter says 5, not more."""
    fake_groq.script.append({"hold": True})
    worker = worker_of(
        make_settings, fake_groq, worker_concurrency=1, insight_budget_per_hour_per_tenant=4
    )
    async with running(worker.app):
        await write(redis, event("e-0"))
        await until(lambda: fake_groq.stats.in_flight == 1, what="the slot busy")
        await write(redis, *(event(f"e-{n}") for n in range(1, 5)))
        await write(redis, event("e-1"), event("e-2"))  # copies, while their events wait
        await until(lambda: consumed(worker, "rate_limited") == 1, what="the fifth refused")
        await until(lambda: consumed(worker, "duplicate") == 2, what="the copies")
        fake_groq.release()
        await until(lambda: consumed(worker, "enriched") == 4, what="four insights")
    assert await redis.get(Keys.rate_limit("acme")) == b"5"
    assert await redis.scard(Keys.charged("acme")) == 4
    assert fake_groq.stats.requests == 4
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def dead_consumer_takes(redis: Any, wanted: int, consumer: str = "dead") -> list[str]:
    """A consumer takes jobs from the scheduler and dies with them (never ends them)."""
    scheduler = RedisScheduler(
        redis, commit=GroupCommit(redis, transaction=True), consumer=consumer, idle_seconds=60
    )
    return [handed.job.event_id for handed in await scheduler.pick(wanted)]


async def schedule_only(redis: Any, make_settings: Any, fake: FakeGroq, count: int) -> None:
    """``count`` events scheduled by a worker whose one slot hangs, none run (the stop
    cuts the hanging call short; its entry is handed back to the stream)."""
    fake.script.append({"delay": 60})
    worker = worker_of(
        make_settings,
        fake,
        worker_concurrency=1,
        worker_id="scheduler-only",
        shutdown_timeout_seconds=0.3,
    )
    async with running(worker.app):
        await write(redis, event("holder"))
        await until(lambda: fake.stats.in_flight == 1, what="its only slot busy")
        await write(redis, *(event(f"job-{n}") for n in range(count)))
        await until(lambda: _all_scheduled(redis, count), what="the events waiting")


async def test_a_dead_workers_jobs_go_to_another_worker_after_claim_idle(
    redis, fake_groq, make_settings
):
    """Jobs a dead consumer took are handed out again once idle for CLAIM_IDLE_SECONDS."""
    await schedule_only(redis, make_settings, fake_groq, 4)
    taken = await dead_consumer_takes(redis, 4)
    assert len(taken) >= 3
    worker = worker_of(make_settings, fake_groq, claim_idle_seconds=0.5, worker_id="alive")
    async with running(worker.app):
        await until(lambda: _insights(redis, taken), what="the dead worker's jobs done")
    assert await redis.exists(Keys.SCHED_JOBS, Keys.SCHED_RUNNING, Keys.SCHED_OWNERS) == 0


async def test_a_fifo_worker_runs_what_a_priority_deployment_left_waiting(
    redis, fake_groq, make_settings
):
    """Switched to EVENT_ORDER=fifo, the workers schedule nothing more but still run the
    jobs left waiting (their entries were acknowledged: nothing else would)."""
    await schedule_only(redis, make_settings, fake_groq, 4)
    worker = worker_of(make_settings, fake_groq, event_order="fifo", worker_id="fifo")
    async with running(worker.app):
        await until(
            lambda: _insights(redis, [f"job-{n}" for n in range(4)]), what="the jobs left done"
        )
        await write(redis, event("new-1"))
        await until(lambda: _insights(redis, ["new-1"]), what="a new event, in stream order")
    assert await redis.exists(Keys.SCHED_JOBS, Keys.SCHED_RUNNING) == 0
    assert consumed(worker, "enriched") >= 5


async def test_waiting_events_need_no_stream_entry_once_retention_trims_it(
    redis, fake_groq, make_settings
):
    """A waiting event's entry is acknowledged, so retention may trim it: the job holds
    the event, and it is answered all the same."""
    await schedule_only(redis, make_settings, fake_groq, 3)
    await redis.xtrim(STREAM, maxlen=0)  # what retention may do to acknowledged entries
    assert await redis.xlen(STREAM) == 0
    worker = worker_of(make_settings, fake_groq, worker_id="after-trim")
    async with running(worker.app):
        await until(lambda: _insights(redis, [f"job-{n}" for n in range(3)]), what="the jobs")
    assert await redis.llen(Keys.DLQ) == 0


async def test_an_event_asked_in_without_its_job_must_wait_and_is_charged_once(
    redis, fake_groq, make_settings
):
    """An event that expects to run now leaves its job out of the admission; when events
    as urgent wait after all, the store says MUST_WAIT (charged, nothing else done) and
    the second asking, with the job, schedules it without charging again."""
    await schedule_only(redis, make_settings, fake_groq, 2)
    store = RedisInsightStore(redis)
    parsed = AuditEvent.model_validate(event("late"))
    received = Received("9-0", {b"payload": json.dumps(event("late")).encode()})
    entry = EntryRef(STREAM, GROUP, "9-0")

    async def admit(**request: Any) -> Admission:
        schedule = schedule_request(parsed, received, cost=1.0, now=time.time(), **request)
        return await store.admit(
            event_id="late", tenant_id="acme", budget=100, entry=entry, schedule=schedule
        )

    assert await admit(may_run=True, with_job=False) is Admission.MUST_WAIT
    assert not await redis.hexists(Keys.SCHED_JOBS, "late")
    assert await admit(may_run=True) is Admission.SCHEDULED
    assert await redis.hexists(Keys.SCHED_JOBS, "late")
    assert await redis.sismember(Keys.charged("acme"), "late")
    # the holder and the two waiting, and it: once each
    assert int(await redis.get(Keys.rate_limit("acme"))) == 4
    assert await redis.scard(Keys.charged("acme")) == 4


async def test_with_nothing_waiting_an_event_without_its_job_runs_now(redis):
    """The everyday case: no job built or sent, admitted to run at once."""
    store = RedisInsightStore(redis)
    parsed = AuditEvent.model_validate(event("now"))
    received = Received("1-0", {b"payload": json.dumps(event("now")).encode()})
    schedule = schedule_request(
        parsed, received, cost=1.0, may_run=True, now=time.time(), with_job=False
    )
    assert schedule.job_json == ""
    verdict = await store.admit(
        event_id="now",
        tenant_id="acme",
        budget=100,
        entry=EntryRef(STREAM, GROUP, "1-0"),
        schedule=schedule,
    )
    assert verdict is Admission.ADMITTED
    assert await redis.exists(Keys.SCHED_JOBS) == 0


async def _insights(redis: Any, event_ids: list[str]) -> bool:
    return bool(await redis.exists(*(Keys.insight(e) for e in event_ids)) == len(event_ids))


async def test_a_restart_under_the_same_id_takes_its_jobs_back_at_once(
    redis, fake_groq, make_settings
):
    """Jobs running under a consumer's name when it died go back when it starts again,
    without waiting CLAIM_IDLE_SECONDS (60 s here)."""
    await schedule_only(redis, make_settings, fake_groq, 3)
    taken = await dead_consumer_takes(redis, 3, consumer="w-1")
    worker = worker_of(make_settings, fake_groq, claim_idle_seconds=60, worker_id="w-1")
    started = time.monotonic()
    async with running(worker.app):
        await until(lambda: _insights(redis, taken), what="its own jobs done", within=10)
    assert time.monotonic() - started < 30  # a bound on a hang, far under the idle time


async def test_a_job_its_workers_keep_dying_on_is_dead_lettered(redis, fake_groq, make_settings):
    """Handed out MAX_DELIVERIES (2) times without an outcome: `max_deliveries`, ended."""
    await schedule_only(redis, make_settings, fake_groq, 1)
    [job] = await dead_consumer_takes(redis, 1, consumer="dead-1")
    await redis.zadd(Keys.SCHED_RUNNING, {job: 0})  # long idle: handed out again at once
    await redis.hset(Keys.SCHED_DELIVERIES, job, 2)
    worker = worker_of(
        make_settings, fake_groq, claim_idle_seconds=0.5, max_deliveries=2, worker_id="alive"
    )
    async with running(worker.app):
        await until(lambda: redis.llen(Keys.DLQ), what="the dead letter")
    [letter] = [json.loads(raw) for raw in await redis.lrange(Keys.DLQ, 0, -1)]
    assert (letter["reason"], letter["deliveries"]) == ("max_deliveries", 2)
    assert letter["payload_field"] == "payload"
    assert json.loads(letter["payload"])["event_id"] == job
    assert await redis.exists(Keys.SCHED_JOBS, Keys.SCHED_RUNNING) == 0
    assert job not in asked(fake_groq)


async def test_slow_jobs_are_kept_alive_and_not_handed_out_twice(redis, fake_groq, make_settings):
    """Model calls slower than CLAIM_IDLE_SECONDS: the worker running them marks them
    alive, so a second worker never takes them; each event is asked once."""
    fake_groq.latency = 1.2
    first = worker_of(
        make_settings, fake_groq, worker_concurrency=2, claim_idle_seconds=0.6, worker_id="w-1"
    )
    second = worker_of(
        make_settings, fake_groq, worker_concurrency=2, claim_idle_seconds=0.6, worker_id="w-2"
    )
    async with running(first.app), running(second.app):
        await write(redis, *(event(f"slow-{n}") for n in range(8)))
        await until(
            lambda: consumed(first, "enriched") + consumed(second, "enriched") == 8,
            what="every insight",
            within=30,
        )
    names = asked(fake_groq)
    assert sorted(names) == sorted(f"slow-{n}" for n in range(8))  # none asked twice


async def test_a_graceful_stop_gives_back_the_jobs_it_could_not_finish(
    redis, fake_groq, make_settings
):
    """SIGTERM while a job's call hangs: after SHUTDOWN_TIMEOUT_SECONDS it goes back to
    the scheduler at once, its delivery not counted, for the next worker."""
    fake_groq.script.extend([{"hold": True}, {"delay": 30}])  # the second call will hang
    worker = worker_of(make_settings, fake_groq, worker_concurrency=1, shutdown_timeout_seconds=0.5)
    async with running(worker.app):
        await write(redis, event("inline"))
        await until(lambda: fake_groq.stats.in_flight == 1, what="the slot busy")
        await write(redis, event("waiting"))
        await until(lambda: _all_scheduled(redis, 1), what="the second waiting")
        fake_groq.release()
        await until(lambda: redis.exists(Keys.insight("inline")), what="the first insight")
        await until(lambda: redis.zcard(Keys.SCHED_RUNNING), what="the second running")
    assert await redis.zscore(Keys.sched_since("low"), "waiting") is not None
    assert await redis.zcard(Keys.SCHED_RUNNING) == 0
    assert await redis.hget(Keys.SCHED_DELIVERIES, "waiting") == b"0"
    assert await redis.hexists(Keys.SCHED_JOBS, "waiting")


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    """A sampled gauge's value (None: the series does not exist)."""
    return metrics.registry.get_sample_value(name, labels)


async def test_metrics_and_status_show_what_waits_by_severity_and_tenant(
    redis, fake_groq, make_settings
):
    """One slot held: 3 low events of "noisy", 1 of "quiet", 2 high of "acme" wait. The
    sampler's gauges and ``groq-worker status`` say so; once all is done, nothing waits
    and the tenants' series are gone."""
    fake_groq.script.append({"hold": True})
    settings = make_settings(groq_base_url=fake_groq.base_url, worker_concurrency=1)
    worker = build_worker(settings, configure_logs=False)
    metrics = Metrics()
    sampler = GroupSampler(redis, metrics, STREAM, GROUP, scheduler=True)

    async with running(worker.app):
        await write(redis, event("holder"))
        await until(lambda: fake_groq.stats.in_flight == 1, what="the slot busy")
        waiting_ones = [event(f"noisy-{n}", "noisy") for n in range(3)]
        waiting_ones += [event("quiet-0", "quiet")]
        waiting_ones += [event(f"acme-{n}", "acme", "high") for n in range(2)]
        await write(redis, *waiting_ones)
        await until(lambda: _all_scheduled(redis, 6), what="six waiting")
        await asyncio.sleep(0.05)  # the oldest has waited a little
        await sampler.sample()
        report = await collect_status(settings, redis, top=2)
        fake_groq.release()
        await until(lambda: consumed(worker, "enriched") == 7, what="every insight")
        await sampler.sample()

    assert gauge(metrics, "acp_groq_waiting_events_by_tenant", tenant_id="noisy") is None  # gone
    assert gauge(metrics, "acp_groq_waiting_events", severity="low") == 0
    assert gauge(metrics, "acp_groq_backlog_events") == 0

    assert report.scheduler is not None
    assert report.scheduler.waiting == {"critical": 0, "high": 2, "medium": 0, "low": 4}
    assert report.scheduler.top_tenants == [("noisy", 3), ("acme", 2)]
    ages = report.waiting_ages()
    assert ages["critical"] is None
    assert ages["low"] is not None
    assert ages["low"] > 0
    scheduler_json = report.as_json()["scheduler"]
    assert scheduler_json["waiting"]["high"]["events"] == 2
    assert scheduler_json["top_tenants"][0] == {"tenant_id": "noisy", "waiting": 3}


async def test_the_sampled_gauges_count_the_waiting_events(redis, fake_groq, make_settings):
    fake_groq.script.append({"hold": True})
    worker = worker_of(make_settings, fake_groq, worker_concurrency=1)
    metrics = Metrics()
    sampler = GroupSampler(redis, metrics, STREAM, GROUP, scheduler=True)

    async with running(worker.app):
        await write(redis, event("holder"))
        await until(lambda: fake_groq.stats.in_flight == 1, what="the slot busy")
        await write(redis, *(event(f"noisy-{n}", "noisy") for n in range(3)))
        await write(redis, event("acme-0", "acme", "high"))
        await until(lambda: _all_scheduled(redis, 4), what="four waiting")
        await asyncio.sleep(0.05)
        await sampler.sample()
        fake_groq.release()
    assert gauge(metrics, "acp_groq_waiting_events", severity="low") == 3
    assert gauge(metrics, "acp_groq_waiting_events", severity="high") == 1
    assert gauge(metrics, "acp_groq_waiting_events", severity="critical") == 0
    assert (gauge(metrics, "acp_groq_oldest_waiting_seconds", severity="low") or 0) > 0
    assert gauge(metrics, "acp_groq_oldest_waiting_seconds", severity="critical") == 0
    assert gauge(metrics, "acp_groq_waiting_events_by_tenant", tenant_id="noisy") == 3
    assert gauge(metrics, "acp_groq_waiting_events_by_tenant", tenant_id="acme") == 1
    assert gauge(metrics, "acp_groq_scheduled_running") == 0  # the holder runs inline, not as a job
    assert gauge(metrics, "acp_groq_backlog_events") == 4  # lag 0 + 4 waiting
