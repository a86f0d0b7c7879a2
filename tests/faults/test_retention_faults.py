"""Retention under kill -9: real worker processes trimming a stream another group also reads."""

from __future__ import annotations

import pytest

from tests.faults.harness import GROUP, STREAM, RedisClient, events, outcomes, wait_until

pytestmark = pytest.mark.faults

FAKE_LATENCY = 0.0  # seconds per model answer (tests/faults/conftest.py)
WORKER_ENV = {  # trim passes every 0.1 s down to 100 entries; one tenant sends all 3,000
    "worker_concurrency": 8,
    "stream_keep_entries": 100,
    "stream_trim_interval_seconds": 0.1,
    "insight_budget_per_hour_per_tenant": 100_000,
}

ARCHIVER = "archiver"


def entry_ids(client: RedisClient) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(STREAM)]


def not_acked_by(client: RedisClient, group: str, ids: list[str]) -> set[str]:
    """Entries of ``ids`` that ``group`` has not acknowledged: pending in it, or unread."""
    info = next(g for g in client.xinfo_groups(STREAM) if g["name"].decode() == group)
    last = tuple(int(part) for part in info["last-delivered-id"].decode().split("-"))
    unread = {i for i in ids if tuple(int(p) for p in i.split("-")) > last}
    pending = client.xpending_range(STREAM, group, min="-", max="+", count=len(ids))
    return unread | {row["message_id"].decode() for row in pending}


def test_kill_9_while_trimming_loses_nothing_any_group_has_not_acked(client, workers):
    """kill -9 mid-drain with trim passes every 0.1 s: every unacked entry stays; all enriched."""
    event_ids = events(client, 3000)
    ids = entry_ids(client)
    client.xgroup_create(STREAM, ARCHIVER, id="0")
    # the archiver has read 1,500 and still holds 100 of them
    read = client.xreadgroup(ARCHIVER, "archiver-1", {STREAM: ">"}, count=1500)
    held = set(ids[1000:1100])
    client.xack(STREAM, ARCHIVER, *[e.decode() for e, _ in read[0][1] if e.decode() not in held])

    first = workers.start("w-1")
    wait_until(lambda: client.xlen(STREAM) < 3000, within=30, step=0.02, what="a first trim")
    assert outcomes(client, event_ids)["insights"] != set(event_ids), "killed mid-drain"
    first.kill()

    remaining = set(entry_ids(client))
    assert len(remaining) < 3000
    for group in (GROUP, ARCHIVER):
        missing = not_acked_by(client, group, ids) - remaining
        assert missing == set(), f"{group} lost {len(missing)} entries it had not acked"
    assert set(ids[1000:]) <= remaining  # the archiver's pending and unread entries

    workers.start("w-2", claim_idle_seconds=1)
    state = wait_until(
        lambda: (
            (s := outcomes(client, event_ids))["pending"] == 0
            and len(s["insights"]) == len(event_ids)
            and s
        ),
        within=90,
        what="all 3,000 insights",
    )
    assert state["dead"] == []
    # the archiver reads on: its 100 pending entries and the 1,500 it had not read are there
    assert set(ids[1000:]) <= set(entry_ids(client))
    rest = client.xreadgroup(ARCHIVER, "archiver-1", {STREAM: ">"}, count=5000)
    assert [e.decode() for e, _ in rest[0][1]] == ids[1500:]
