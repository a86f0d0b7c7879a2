"""`groq-worker dlq` and its adapter against a real Redis: list, replay, purge, crash safety."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.adapters import dlq
from app.bootstrap import build_worker
from app.cli import main
from app.domain.errors import TransientLLMError
from app.domain.insights import DeadLetter, DeadLetterReason
from tests.conftest import running
from tests.support.fakes import ScriptedLLM
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis_modes]

DLQ = "acp:groq:dlq"
STREAM = "acp:groq_queue"
GROUP = "acp_insights_consumer_group"


@pytest.fixture(autouse=True)
def cli_env(redis_url, redis_mode, monkeypatch):
    """The CLI reads its settings from the environment: point it at the private Redis."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_MODE", redis_mode)
    monkeypatch.setenv("INSIGHT_STREAM", STREAM)


def payload_of(n: int) -> str:
    return json.dumps(
        {
            "event_id": f"evt-{n}",
            "tenant_id": "acme",
            "agent_id": "billing-agent",
            "decision": "deny",
            "severity": "low",
            "timestamp": 1_764_000_000 + n,
        }
    )


def letter(n: int, reason: str = "llm_exhausted", *, payload: Any = ..., **extra: Any) -> str:
    """Dead letter number ``n`` (higher failed later) as the worker stores it."""
    return DeadLetter(
        entry_id=f"{1_764_000_000_000 + n}-0",
        stream=STREAM,
        fields={"payload": payload_of(n)},
        payload=payload_of(n) if payload is ... else payload,
        reason=DeadLetterReason(reason),
        error=f"failure number {n}",
        attempts=3,
        failed_at=f"2026-11-25T02:20:{n:02d}.000Z",
        event_id=f"evt-{n}",
        tenant_id="acme",
        **extra,
    ).model_dump_json()


async def push(redis: Redis, *letters: str) -> None:
    """LPUSH like the worker: the last one given is the newest, at the head."""
    for raw in letters:
        await redis.lpush(DLQ, raw)


async def groq_worker(*args: str) -> int:
    """Run the CLI as an operator would; in a thread, since it runs its own event loop."""
    return await asyncio.to_thread(main, list(args))


async def stream_payloads(redis: Any) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in await redis.xrange(STREAM)]


async def dlq_raw(redis: Any) -> list[bytes]:
    raw: list[bytes] = await redis.lrange(DLQ, 0, -1)
    return raw


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# -- list -------------------------------------------------------------------------------


@pytest.mark.cluster_smoke
async def test_list_json_is_newest_first_and_honours_limit(redis, capsys):
    """`dlq list --json` prints the letters newest first; --limit keeps the newest N."""
    await push(redis, letter(1), letter(2), letter(3))
    assert await groq_worker("dlq", "list", "--json") == 0
    assert [d["event_id"] for d in json_lines(capsys.readouterr().out)] == [
        "evt-3",
        "evt-2",
        "evt-1",
    ]
    assert await groq_worker("dlq", "list", "--json", "--limit", "2") == 0
    assert [d["event_id"] for d in json_lines(capsys.readouterr().out)] == ["evt-3", "evt-2"]


async def test_list_filters_by_reason(redis, capsys):
    """--reason shows only letters of that reason, still newest first."""
    await push(redis, letter(1, "invalid"), letter(2, "conflict"), letter(3, "invalid"))
    assert await groq_worker("dlq", "list", "--json", "--reason", "invalid") == 0
    lines = json_lines(capsys.readouterr().out)
    assert [(d["event_id"], d["reason"]) for d in lines] == [
        ("evt-3", "invalid"),
        ("evt-1", "invalid"),
    ]


async def test_list_table_shows_the_columns_an_operator_needs(redis, capsys):
    """The table has entry id, failed_at, reason, event, tenant, attempts and a cut error."""
    await push(redis, letter(1))
    long_error = DeadLetter.model_validate_json(letter(2)).model_copy(update={"error": "x" * 200})
    await redis.lpush(DLQ, long_error.model_dump_json())
    assert await groq_worker("dlq", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "ENTRY",
        "ID",
        "FAILED",
        "AT",
        "REASON",
        "EVENT",
        "ID",
        "TENANT",
        "ATTEMPTS",
        "ERROR",
    ]
    assert out[1].split()[:6] == [
        "1764000000002-0",
        "2026-11-25T02:20:02.000Z",
        "llm_exhausted",
        "evt-2",
        "acme",
        "3",
    ]
    assert out[1].split()[6] == "x" * 59 + "…"  # truncated to 60 characters
    assert out[2].split()[3] == "evt-1"
    assert out[-1] == "2 dead letter(s) shown, newest first; acp:groq:dlq holds 2"


async def test_list_reports_an_unreadable_element_instead_of_crashing(redis, capsys):
    """An element that is not a DeadLetter is listed as unreadable; the others still show."""
    await push(redis, letter(1), "not json at all", letter(3))
    assert await groq_worker("dlq", "list", "--json") == 0
    lines = json_lines(capsys.readouterr().out)
    assert lines[0]["event_id"] == "evt-3"
    assert lines[1]["unreadable"] == "not json at all"
    assert "not a dead letter" in lines[1]["problem"]
    assert lines[2]["event_id"] == "evt-1"
    assert await dlq.reason_counts(redis) == {"llm_exhausted": 2, dlq.UNREADABLE: 1}


# -- replay -----------------------------------------------------------------------------


@pytest.mark.cluster_smoke
async def test_replay_puts_payloads_on_the_stream_in_failure_order(redis, capsys):
    """Replay XADDs `payload` entries oldest letter first and removes just those letters."""
    no_payload = letter(2, "invalid", payload=None)
    await push(redis, letter(1), no_payload, letter(3, "llm_permanent"))
    assert await groq_worker("dlq", "replay") == 0

    assert await stream_payloads(redis) == [
        {b"payload": payload_of(1).encode()},
        {b"payload": payload_of(3).encode()},
    ]
    assert await dlq_raw(redis) == [no_payload.encode()]
    out = capsys.readouterr().out
    assert "skipped 1764000000002-0 evt-2 (invalid): no payload to replay" in out
    assert out.splitlines()[-1] == (
        "replayed 2 dead letter(s) onto acp:groq_queue; skipped 1 (no_payload: 1); "
        "acp:groq:dlq holds 1"
    )


async def test_replay_limit_takes_the_oldest_letters(redis, capsys):
    """--limit 2 replays the two letters that failed first; the newest stays."""
    await push(redis, letter(1), letter(2), letter(3))
    assert await groq_worker("dlq", "replay", "--limit", "2") == 0
    assert await stream_payloads(redis) == [
        {b"payload": payload_of(1).encode()},
        {b"payload": payload_of(2).encode()},
    ]
    assert await dlq_raw(redis) == [letter(3).encode()]


async def test_replay_reason_filters(redis, capsys):
    """--reason replays only letters of that reason and leaves the others in place."""
    await push(redis, letter(1, "conflict"), letter(2), letter(3, "conflict"), letter(4))
    assert await groq_worker("dlq", "replay", "--reason", "llm_exhausted") == 0
    assert await stream_payloads(redis) == [
        {b"payload": payload_of(2).encode()},
        {b"payload": payload_of(4).encode()},
    ]
    assert await dlq_raw(redis) == [letter(3, "conflict").encode(), letter(1, "conflict").encode()]


async def test_replay_dry_run_changes_nothing(redis, capsys):
    """--dry-run reports what would be replayed; the DLQ and the stream are untouched."""
    await push(redis, letter(1), letter(2, payload=None), letter(3))
    before = await dlq_raw(redis)
    assert await groq_worker("dlq", "replay", "--dry-run") == 0
    assert await dlq_raw(redis) == before
    assert await redis.exists(STREAM) == 0
    out = capsys.readouterr().out
    assert "would replay 1764000000001-0 evt-1 (llm_exhausted) onto acp:groq_queue" in out
    assert "would replay 1764000000003-0 evt-3" in out
    assert "dry run, nothing changed (acp:groq:dlq holds 3)" in out


async def test_replay_skips_an_unreadable_element_and_keeps_it(redis, capsys):
    """An element that is not a DeadLetter is reported and left; the letters behind it go."""
    await push(redis, "{broken", letter(2))
    assert await groq_worker("dlq", "replay") == 0
    assert await stream_payloads(redis) == [{b"payload": payload_of(2).encode()}]
    assert await dlq_raw(redis) == [b"{broken"]
    assert "skipped unreadable element '{broken'" in capsys.readouterr().out


async def test_replay_result_counts_ids_and_new_dlq_size(redis):
    """The adapter returns the new stream ids, skip causes and the DLQ length after it."""
    await push(redis, letter(1), letter(2, payload=None), letter(3))
    result = await dlq.replay(redis, stream=STREAM)
    on_stream = [entry_id.decode() for entry_id, _ in await redis.xrange(STREAM)]
    assert result.new_entry_ids == on_stream
    assert [r.letter.event_id for r in result.replayed] == ["evt-1", "evt-3"]
    assert result.skipped_by_cause == {dlq.SkipCause.NO_PAYLOAD: 1}
    assert result.dlq_size == 1 == await redis.llen(DLQ)


async def test_replay_walks_a_long_dlq_in_order_past_the_letters_it_keeps(redis):
    """Across many LRANGE pieces, letters are replayed in failure order and kept ones stay."""
    n_letters = 2 * dlq.CHUNK + 50
    kept = {n for n in range(n_letters) if n % 3 == 0}
    await push(redis, *(letter(n, payload=None if n in kept else ...) for n in range(n_letters)))
    result = await dlq.replay(redis, stream=STREAM)
    replayed = [n for n in range(n_letters) if n not in kept]
    assert await stream_payloads(redis) == [{b"payload": payload_of(n).encode()} for n in replayed]
    assert await dlq_raw(redis) == [letter(n, payload=None).encode() for n in sorted(kept)[::-1]]
    assert len(result.skipped) == len(kept)
    listed = await dlq.list_letters(redis, limit=None)
    assert [item.event_id for item in listed if isinstance(item, DeadLetter)] == [
        f"evt-{n}" for n in sorted(kept)[::-1]
    ]


# -- crash safety -----------------------------------------------------------------------


class ReplyLostRedis(Redis):
    """A client whose first script call reaches Redis but whose reply is lost (a crash)."""

    failures = 1

    async def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        reply = await super().evalsha(*args, **kwargs)
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("connection lost before the reply")
        return reply


class ConcurrentReplayRedis(Redis):
    """A client that lets another operator remove the letter just before its own move."""

    async def evalsha(self, sha: Any, numkeys: int, *keys_and_args: Any) -> Any:
        key, raw = keys_and_args[0], keys_and_args[2]
        await self.lrem(key, 1, raw)  # the other replay got there first
        return await super().evalsha(sha, numkeys, *keys_and_args)


@pytest.mark.redis_modes("standalone")  # the one-script move of a single Redis
async def test_a_lost_reply_leaves_the_letter_either_replayed_or_kept_never_both(
    redis, redis_server
):
    """A crash after the move: the event is on the stream once and out of the DLQ; a rerun
    replays only the rest (the move is one atomic script, so it is never lost or doubled)."""
    await push(redis, letter(1), letter(2))
    client = ReplyLostRedis.from_url(redis_server.url)
    try:
        with pytest.raises(dlq.ReplayInterrupted) as interrupted:
            await dlq.replay(client, stream=STREAM)
        assert interrupted.value.result.replayed == []  # the reply never arrived
        assert await stream_payloads(redis) == [{b"payload": payload_of(1).encode()}]
        assert await dlq_raw(redis) == [letter(2).encode()]

        rerun = await dlq.replay(client, stream=STREAM)
    finally:
        await client.aclose()
    assert [r.letter.event_id for r in rerun.replayed] == ["evt-2"]
    assert await stream_payloads(redis) == [
        {b"payload": payload_of(1).encode()},
        {b"payload": payload_of(2).encode()},
    ]
    assert await redis.llen(DLQ) == 0


async def test_a_failed_xadd_keeps_the_letter(redis):
    """When the XADD fails (the stream key is not a stream), the letter stays as it was."""
    await push(redis, letter(1))
    await redis.set(STREAM, "not a stream")
    with pytest.raises(dlq.ReplayInterrupted) as interrupted:
        await dlq.replay(redis, stream=STREAM)
    assert "WRONGTYPE" in str(interrupted.value.cause)
    assert await dlq_raw(redis) == [letter(1).encode()]


@pytest.mark.redis_modes("standalone")  # the one-script move of a single Redis
async def test_a_letter_removed_by_a_concurrent_replay_is_not_replayed_again(redis, redis_server):
    """Two replays at once: the second finds the letter gone and does not XADD it again."""
    await push(redis, letter(1))
    client = ConcurrentReplayRedis.from_url(redis_server.url)
    try:
        result = await dlq.replay(client, stream=STREAM)
    finally:
        await client.aclose()
    assert result.replayed == []
    assert result.skipped_by_cause == {dlq.SkipCause.GONE: 1}
    assert await redis.exists(STREAM) == 0
    assert await redis.llen(DLQ) == 0


# -- purge, settings, Redis away ----------------------------------------------------------


async def test_purge_needs_yes(redis, capsys):
    """Without --yes purge refuses (exit 2) and deletes nothing; with it the DLQ is gone."""
    await push(redis, letter(1), letter(2), letter(3))
    assert await groq_worker("dlq", "purge") == 2
    assert "run it again with --yes" in capsys.readouterr().err
    assert await redis.llen(DLQ) == 3

    assert await groq_worker("dlq", "purge", "--yes") == 0
    assert capsys.readouterr().out.strip() == "purged 3 dead letter(s); acp:groq:dlq is empty"
    assert await redis.exists(DLQ) == 0


async def test_a_bad_setting_exits_2_naming_it(redis, monkeypatch, capsys):
    """A REDIS_URL that is not a Redis URL: the SettingsError message and exit code 2."""
    monkeypatch.setenv("REDIS_URL", "http://example.invalid/")
    assert await groq_worker("dlq", "list") == 2
    err = capsys.readouterr().err
    assert "REDIS_URL" in err
    assert "redis://" in err


async def test_unreachable_redis_is_one_line_and_exit_1(monkeypatch, capsys):
    """Nothing listening at REDIS_URL: one error line naming host:port, no traceback."""
    port = free_port()
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert await groq_worker("dlq", "replay") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"groq-worker dlq: cannot reach Redis at 127.0.0.1:{port}/0 (")
    assert "Traceback" not in captured.err
    assert "hunter2" not in captured.err


# -- end to end -------------------------------------------------------------------------


async def wait_for(condition: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within}s")


async def test_a_letter_the_worker_wrote_is_enriched_after_replay(redis, make_settings, capsys):
    """The worker dead-letters an event when the model is down; replayed, it is enriched."""
    # Two transient failures exhaust GROQ_MAX_ATTEMPTS=2; after that the model answers.
    llm = ScriptedLLM([TransientLLMError("server_error", "down", status=503)] * 2)
    worker = build_worker(make_settings(llm_provider="offline", groq_max_attempts=2), llm=llm)
    await redis.xadd(STREAM, {"payload": payload_of(7)})
    async with running(worker.app):
        await wait_for(lambda: _dlq_has(redis, 1))
        [written] = await dlq.list_letters(redis, limit=None)
        assert isinstance(written, DeadLetter)
        assert written.reason is DeadLetterReason.LLM_EXHAUSTED
        assert await redis.exists("acp:groq:insight:evt-7") == 0

        assert await groq_worker("dlq", "replay") == 0
        await wait_for(lambda: _has_insight(redis, "evt-7"))
    record = json.loads(await redis.get("acp:groq:insight:evt-7"))
    assert record["tenant_id"] == "acme"
    assert await redis.llen(DLQ) == 0
    assert await redis.xpending(STREAM, GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    assert "replayed 1 dead letter(s) onto acp:groq_queue" in capsys.readouterr().out


async def _dlq_has(redis: Redis, n: int) -> bool:
    return bool(await redis.llen(DLQ) >= n)


async def _has_insight(redis: Redis, event_id: str) -> bool:
    return bool(await redis.exists(f"acp:groq:insight:{event_id}"))
