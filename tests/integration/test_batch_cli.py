"""``groq-worker batch list|cancel`` and the lane in ``groq-worker status``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis as redis_sync

from app.cli import main
from app.domain.batch import BatchRecord, BatchState
from app.domain.keys import Keys
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_server: RedisServer, monkeypatch) -> Iterator[redis_sync.Redis]:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("GROQ_BATCH_SEVERITIES", "low,medium")
    monkeypatch.setenv("LLM_PROVIDER", "offline")
    client = redis_sync.Redis.from_url(redis_server.url)
    client.flushdb()
    client.xgroup_create("acp:groq_queue", "acp_insights_consumer_group", id="0", mkstream=True)
    try:
        yield client
    finally:
        client.close()


def prepare(store: redis_sync.Redis) -> float:
    """Two requests waiting (the oldest since 90 s before the time returned), a batch."""
    now = time.time()
    store.zadd(Keys.LANE_WAITING, {"evt-1": now - 90, "evt-2": now - 10})
    store.hset(Keys.LANE_REQUESTS, mapping={"evt-1": "{}", "evt-2": "{}", "evt-3": "{}"})
    record = BatchRecord(
        local_id="lane-a",
        event_ids=("evt-3",),
        created_at=now - 60,
        state=BatchState.IN_PROGRESS,
        groq_id="batch_0001",
    )
    store.hset(Keys.LANE_BATCHES, "lane-a", record.model_dump_json())
    store.set(Keys.LANE_LOCK, "w-1:abc", px=60_000)
    return now


def test_batch_list_shows_what_waits_each_batch_and_the_poller(store, capsys):
    prepared = prepare(store)
    assert main(["batch", "list", "--json"]) == 0
    since = time.time() - prepared  # the list was made within this long of prepare()
    listed = json.loads(capsys.readouterr().out)
    assert listed["waiting"] == 2
    assert 90 - 0.001 <= listed["oldest_waiting_seconds"] <= 90 + since + 0.001
    assert listed["lock_holder"] == "w-1:abc"
    assert [
        (b["lane_id"], b["batch_id"], b["state"], b["requests"]) for b in listed["batches"]
    ] == [("lane-a", "batch_0001", "in_progress", 1)]
    assert main(["batch", "list"]) == 0
    text = capsys.readouterr().out
    assert "2 request(s) waiting for a batch, the oldest for 1m 30s" in text
    assert ["lane-a", "batch_0001", "in_progress", "1", "1m"] in [
        line.split() for line in text.splitlines()
    ]


def test_status_shows_the_lane(store, capsys):
    prepare(store)
    assert main(["status", "--json"]) == 0
    lane = json.loads(capsys.readouterr().out)["batch_lane"]
    assert lane["severities"] == ["low", "medium"]
    assert lane["waiting"] == 2
    assert main(["status"]) == 0
    assert "low,medium: 2 waiting (oldest 1m 30s); batches in_progress 1" in (
        " ".join(capsys.readouterr().out.split())
    )


def test_status_says_the_lane_is_off_when_it_is(store, capsys, monkeypatch):
    monkeypatch.delenv("GROQ_BATCH_SEVERITIES")
    assert main(["status"]) == 0
    assert "off (GROQ_BATCH_SEVERITIES is empty)" in capsys.readouterr().out


def test_cancelling_a_batch_the_lane_does_not_know_exits_1(store, capsys):
    prepare(store)
    assert main(["batch", "cancel", "batch_9999"]) == 1
    assert "no batch batch_9999 in the lane" in capsys.readouterr().err


def test_batch_cancel_by_lane_id_cancels_the_batch_at_groq(store, capsys, monkeypatch):
    """cancel ID (the lane id) resolves the Groq batch id and cancels it through the SDK."""
    import groq

    from tests.faults.harness import FakeGroqProcess
    from tests.support.fake_groq import API_KEY

    fake = FakeGroqProcess().start()
    try:
        client = groq.Groq(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
        line = {
            "custom_id": "evt-3",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "openai/gpt-oss-20b", "messages": []},
        }
        uploaded = client.files.create(
            file=("b.jsonl", json.dumps(line).encode(), "application/jsonl"), purpose="batch"
        )
        assert uploaded.id
        created = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        record = BatchRecord(
            local_id="lane-b",
            event_ids=("evt-3",),
            created_at=time.time(),
            state=BatchState.VALIDATING,
            groq_id=created.id,
        )
        store.hset(Keys.LANE_BATCHES, "lane-b", record.model_dump_json())
        monkeypatch.setenv("LLM_PROVIDER", "groq")
        monkeypatch.setenv("GROQ_API_KEY", API_KEY)
        monkeypatch.setenv("GROQ_BASE_URL", fake.base_url)

        assert main(["batch", "cancel", "lane-b"]) == 0
        assert f"{created.id}: cancelling" in capsys.readouterr().out
        assert [b["status"] for b in fake.batches()["batches"]] == ["cancelling"]
    finally:
        fake.stop()
