"""``groq-worker status`` and ``groq-worker consumers prune`` against a prepared Redis."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync

from app.cli import main
from app.cli.consumers import parse_duration
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes]

STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"


@pytest.fixture
def store(redis_url: str, redis_mode: str, monkeypatch) -> Iterator[redis_sync.Redis]:
    """The private Redis, flushed, with the CLI's settings pointing at it."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_MODE", redis_mode)
    for name in ("INSIGHT_STREAM", "INSIGHT_GROUP"):
        monkeypatch.delenv(name, raising=False)
    client: Any = (
        redis_sync.RedisCluster.from_url(redis_url)
        if redis_mode == "cluster"
        else redis_sync.Redis.from_url(redis_url)
    )
    client.flushall()
    try:
        yield client
    finally:
        client.close()


def letter(reason: str) -> str:
    return json.dumps({"entry_id": "1-0", "reason": reason, "error": "x", "attempts": 1})


def prepare(store: Any) -> list[str]:
    """5 entries, 2 delivered to w-busy and not acked, w-idle with none, 4 dead letters."""
    ids = [store.xadd(STREAM, {"payload": json.dumps({"n": n})}).decode() for n in range(5)]
    store.xgroup_create(STREAM, GROUP, id="0")
    store.xreadgroup(GROUP, "w-busy", {STREAM: ">"}, count=2)
    store.xgroup_createconsumer(STREAM, GROUP, "w-idle")
    store.lpush(
        "acp:groq:dlq", letter("invalid"), letter("llm_exhausted"), letter("invalid"), "not json"
    )
    store.set("acp:groq:rate_limit:acme", 12, ex=3600)
    store.set("acp:groq:rate_limit:globex", 40, ex=1800)
    store.set("acp:groq:rate_limit:tiny", 1, ex=600)
    return ids


@pytest.mark.cluster_smoke
def test_status_json_reports_lag_pending_consumers_dlq_and_budgets(store, capsys):
    """status --json: the numbers of the prepared state, and exit 0."""
    ids = prepare(store)
    code = main(["status", "--json", "--top", "2"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["stream"] == {"name": STREAM, "length": 5}
    group = report["group"]
    assert group["exists"] is True
    assert group["lag"] == 3
    assert group["pending"] == 2
    assert group["last_delivered_id"] == ids[1]
    oldest = group["oldest_pending"]
    assert oldest["entry_id"] == ids[0]
    assert oldest["consumer"] == "w-busy"
    assert oldest["deliveries"] == 1
    assert oldest["age_seconds"] >= 0
    consumers = {c["name"]: c["pending"] for c in report["consumers"]}
    assert consumers == {"w-busy": 2, "w-idle": 0}
    assert report["dlq"]["size"] == 4
    assert report["dlq"]["scanned"] == 4
    assert report["dlq"]["reasons"] == {"invalid": 2, "llm_exhausted": 1, "unreadable": 1}
    limits = report["rate_limits"]
    assert limits["tenants"] == 3
    assert [(b["tenant_id"], b["used"]) for b in limits["busiest"]] == [
        ("globex", 40),
        ("acme", 12),
    ]
    assert 0 < limits["busiest"][0]["ttl_seconds"] <= 1800


def test_status_table_shows_the_same_numbers(store, capsys):
    """status without --json prints tables a person reads, with the same figures."""
    prepare(store)
    code = main(["status"])
    out = capsys.readouterr().out
    assert code == 0
    for expected in ("acp:groq_queue", "w-busy", "w-idle", "llm_exhausted", "globex", "40"):
        assert expected in out
    assert "lag (not yet delivered)" in out
    lag_line = next(line for line in out.splitlines() if line.startswith("lag"))
    assert lag_line.split()[-1] == "3"


def test_status_exits_1_when_the_group_does_not_exist(store, capsys):
    """A stream without the group: exit 1, and the report says the group is missing."""
    store.xadd(STREAM, {"payload": "{}"})
    code = main(["status", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["group"] == {"name": GROUP, "exists": False}
    assert "does not exist" in captured.err


def test_status_exits_1_with_one_line_when_redis_is_unreachable(monkeypatch, capsys):
    """Nothing listening: exit 1, one line on stderr, and no password from the URL."""
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0")
    code = main(["status"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("groq-worker status: cannot reach Redis at 127.0.0.1:")
    assert "hunter2-secret" not in captured.err


def prepare_consumers(store: redis_sync.Redis) -> None:
    """dead-empty and dead-holding idle ~1.5 s (one entry pending on the latter); fresh."""
    store.xadd(STREAM, {"payload": "{}"})
    store.xgroup_create(STREAM, GROUP, id="0")
    store.xreadgroup(GROUP, "dead-holding", {STREAM: ">"}, count=1)
    store.xgroup_createconsumer(STREAM, GROUP, "dead-empty")
    time.sleep(1.5)
    store.xgroup_createconsumer(STREAM, GROUP, "fresh-empty")


def consumer_names(store: redis_sync.Redis) -> set[str]:
    return {c["name"].decode() for c in store.xinfo_consumers(STREAM, GROUP)}


def test_prune_removes_only_idle_consumers_holding_nothing(store, capsys):
    """--idle 1s deletes dead-empty; the one holding an entry and the fresh one stay."""
    prepare_consumers(store)
    code = main(["consumers", "prune", "--idle", "1s", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pruned"] == ["dead-empty"]
    actions = {c["name"]: c["action"] for c in report["consumers"]}
    assert actions == {
        "dead-empty": "deleted",
        "dead-holding": "kept_pending",
        "fresh-empty": "kept_recent",
    }
    assert consumer_names(store) == {"dead-holding", "fresh-empty"}
    assert store.xpending(STREAM, GROUP)["pending"] == 1  # the held entry is still pending


def test_prune_dry_run_deletes_nothing(store, capsys):
    """--dry-run names what it would delete and leaves every consumer in place."""
    prepare_consumers(store)
    code = main(["consumers", "prune", "--idle", "1s", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "would delete" in out
    assert "would prune 1 of 3 consumers" in out
    assert consumer_names(store) == {"dead-empty", "dead-holding", "fresh-empty"}


def test_prune_exits_1_when_the_group_does_not_exist(store, capsys):
    """No group to prune: exit 1 with a line saying so."""
    code = main(["consumers", "prune", "--idle", "1h"])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172_800), ("1h30m", 5400), ("45", 45)],
)
def test_durations_are_read_in_operator_units(text, seconds):
    """--idle takes 90s, 30m, 1h, 2d, compounds, and bare seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1w", "-1h", "0s", "h1"])
def test_bad_durations_are_refused(text):
    """Anything else is a usage error, not a guess."""
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
