"""The dead-letter queue ``acp:groq:dlq``: read it, replay it onto the inbound stream, purge it.

The worker LPUSHes one JSON ``DeadLetter`` per failed entry, so the list is newest first.
These are the operator's operations on it (``groq-worker dlq ...``, ``groq-worker status``);
they print nothing and return what they did.

Replay moves one letter at a time with a Lua script: the letter must still be in the list
(``LPOS``), its payload is XADDed in the gateway's wire format (``XADD <stream> *
payload <json>``) and only then is that exact element removed (``LREM``). A script runs
atomically, so a letter is never off the DLQ without being on the stream, and a crash
(of this process or of the connection) leaves it either still dead-lettered or already
replayed, never both and never neither. If the XADD fails, the script stops before the
LREM and nothing has changed. Because the letter's presence is checked inside the same
script, two replays running at once cannot put the same letter on the stream twice: the
second finds it gone. (A MULTI/EXEC of XADD and LREM could not check that, and would
still LREM after a failed XADD, since EXEC does not stop at a failing command.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from app.adapters.redis_clients import is_cluster
from app.adapters.redis_replies import as_text
from app.domain.insights import DeadLetter, DeadLetterReason
from app.domain.keys import Keys

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient

__all__ = [
    "UNREADABLE",
    "ReplayInterrupted",
    "ReplayResult",
    "Replayed",
    "SkipCause",
    "Skipped",
    "UnreadableLetter",
    "dlq_size",
    "list_letters",
    "parse_letter",
    "purge",
    "reason_counts",
    "replay",
]

# Letters read per LRANGE: a DLQ of any size is read in bounded pieces.
CHUNK = 200

# The ``reason_counts`` key of entries that are not a readable ``DeadLetter``.
UNREADABLE = "unreadable"

# KEYS[1] the DLQ, KEYS[2] the inbound stream; ARGV[1] the letter exactly as stored,
# ARGV[2] the payload. Returns the new stream entry id, or nil when the letter is gone.
# LPOS/LREM search from the tail, where the oldest letters (replayed first) are.
_REPLAY_ONE = """
if not redis.call('LPOS', KEYS[1], ARGV[1], 'RANK', -1) then return false end
local id = redis.call('XADD', KEYS[2], '*', 'payload', ARGV[2])
redis.call('LREM', KEYS[1], -1, ARGV[1])
return id
"""


@dataclass(frozen=True, slots=True)
class UnreadableLetter:
    """A DLQ element that is not a valid ``DeadLetter`` (kept as stored, never dropped)."""

    raw: bytes
    problem: str

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


def parse_letter(raw: bytes | str) -> DeadLetter | UnreadableLetter:
    """One DLQ element as a ``DeadLetter``, or an ``UnreadableLetter`` saying why not."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        return DeadLetter.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        problem = f"{where}: {first['msg']}" if where else first["msg"]
        return UnreadableLetter(raw=data, problem=f"not a dead letter ({problem})")


class SkipCause(StrEnum):
    NO_PAYLOAD = "no_payload"  # the entry had no readable payload: nothing to put back
    UNREADABLE = "unreadable"  # the element is not a DeadLetter
    GONE = "gone"  # removed since it was read (another replay, a purge)


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: DeadLetter
    stream_entry_id: str | None  # the new entry on the stream; None on a dry run
    target: str | None = None  # where it went when not the stream (kafka:<topic>)


# INBOUND=kafka: sends a letter's payload (and key) to a topic; returns "<partition>-<offset>".
KafkaSend = Callable[[str, str, bytes | None], Awaitable[str]]
KAFKA_PREFIX = "kafka:"  # the stream a Kafka record's letter names: kafka:<topic>


@dataclass(frozen=True, slots=True)
class Skipped:
    cause: SkipCause
    letter: DeadLetter | UnreadableLetter


@dataclass
class ReplayResult:
    """What one replay did (or, on a dry run, would do)."""

    stream: str
    dry_run: bool
    replayed: list[Replayed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    dlq_size: int | None = None  # LLEN after the run (None when it was interrupted)

    @property
    def new_entry_ids(self) -> list[str]:
        return [r.stream_entry_id for r in self.replayed if r.stream_entry_id is not None]

    @property
    def skipped_by_cause(self) -> Counter[SkipCause]:
        return Counter(s.cause for s in self.skipped)


class ReplayInterrupted(Exception):
    """Redis failed part-way; ``result`` holds what was replayed before (all of it is safe)."""

    def __init__(self, result: ReplayResult, cause: RedisError) -> None:
        super().__init__(f"replay interrupted after {len(result.replayed)} letter(s): {cause}")
        self.result = result
        self.cause = cause


async def dlq_size(redis: RedisClient) -> int:
    """``LLEN acp:groq:dlq``: the dead letters waiting."""
    return int(await redis.llen(Keys.DLQ))


async def _newest_first(redis: RedisClient) -> AsyncIterator[bytes | str]:
    start = 0
    while True:
        chunk: list[bytes | str] = await redis.lrange(Keys.DLQ, start, start + CHUNK - 1)
        for raw in chunk:
            yield raw
        if len(chunk) < CHUNK:
            return
        start += CHUNK


def _selected(item: DeadLetter | UnreadableLetter, reason: DeadLetterReason | None) -> bool:
    if reason is None:
        return True
    return isinstance(item, DeadLetter) and item.reason is reason


async def list_letters(
    redis: RedisClient, *, limit: int | None, reason: DeadLetterReason | str | None = None
) -> list[DeadLetter | UnreadableLetter]:
    """Dead letters newest first, at most ``limit``, of one ``reason`` if given.

    An element that is not a valid ``DeadLetter`` comes back as an ``UnreadableLetter``
    in its place (and never matches a ``reason``).
    """
    wanted = DeadLetterReason(reason) if reason is not None else None
    found: list[DeadLetter | UnreadableLetter] = []
    if limit is not None and limit <= 0:
        return found
    async for raw in _newest_first(redis):
        item = parse_letter(raw)
        if _selected(item, wanted):
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
    return found


async def reason_counts(redis: RedisClient) -> Counter[str]:
    """How many letters the DLQ holds per reason (``"unreadable"`` for invalid elements)."""
    counts: Counter[str] = Counter()
    async for raw in _newest_first(redis):
        item = parse_letter(raw)
        counts[item.reason.value if isinstance(item, DeadLetter) else UNREADABLE] += 1
    return counts


async def replay(
    redis: RedisClient,
    *,
    stream: str,
    limit: int | None = None,
    reason: DeadLetterReason | str | None = None,
    dry_run: bool = False,
    kafka: KafkaSend | None = None,
) -> ReplayResult:
    """Put dead letters back on ``stream``, oldest first, each leaving the DLQ as it lands.

    ``limit`` counts letters replayed; letters without a payload and unreadable elements
    met on the way stay in the DLQ and are reported in ``skipped``. Only the letters the
    DLQ held when the replay started are looked at, so letters that fail again while it
    runs are not replayed a second time in the same run. Raises ``ReplayInterrupted``
    (with the partial result) when Redis fails part-way.

    With ``kafka`` (INBOUND=kafka), a letter of a Kafka record (its stream is
    ``kafka:<topic>``) goes back to its topic instead, with its key: sent first and taken
    off the DLQ after, so a crash in between replays it twice (a ``duplicate``), never zero
    times.
    """
    wanted = DeadLetterReason(reason) if reason is not None else None
    result = ReplayResult(stream=stream, dry_run=dry_run)
    move = _mover(redis, stream)

    def done() -> bool:
        return limit is not None and len(result.replayed) >= limit

    try:
        remaining = await dlq_size(redis)
        # Letters looked at and left in place; they are all at the tail end, so the next
        # oldest letter not yet looked at is at index -(kept + 1).
        kept = 0
        while remaining > 0 and not done():
            count = min(CHUNK, remaining)
            chunk: list[bytes | str] = await redis.lrange(Keys.DLQ, -(kept + count), -(kept + 1))
            if not chunk:
                break
            for raw in reversed(chunk):
                if done():
                    break
                remaining -= 1
                item = parse_letter(raw)
                if not _selected(item, wanted):
                    kept += 1
                elif isinstance(item, UnreadableLetter):
                    result.skipped.append(Skipped(SkipCause.UNREADABLE, item))
                    kept += 1
                elif item.payload is None:
                    result.skipped.append(Skipped(SkipCause.NO_PAYLOAD, item))
                    kept += 1
                elif dry_run:
                    result.replayed.append(Replayed(item, None))
                    kept += 1
                elif kafka is not None and item.stream.startswith(KAFKA_PREFIX):
                    where = await _to_kafka(redis, kafka, raw, item)
                    if where is None:
                        result.skipped.append(Skipped(SkipCause.GONE, item))
                    else:
                        result.replayed.append(Replayed(item, where, item.stream))
                else:
                    entry_id = await move(raw, item.payload)
                    if entry_id is None:
                        result.skipped.append(Skipped(SkipCause.GONE, item))
                    else:
                        result.replayed.append(Replayed(item, as_text(entry_id)))
        result.dlq_size = await dlq_size(redis)
    except RedisError as exc:
        raise ReplayInterrupted(result, exc) from exc
    return result


def _mover(redis: RedisClient, stream: str) -> Callable[[bytes | str, str], Awaitable[Any]]:
    """Moves one letter from the DLQ to ``stream``; None when the letter is gone.

    On one Redis, one script: the letter lands and leaves together. In a cluster the DLQ
    and the stream are in different slots: the letter lands first and leaves after, so a
    crash in between replays it twice (the second is a ``duplicate`` if the first was
    enriched), never zero times.
    """
    if not is_cluster(redis):
        script = redis.register_script(_REPLAY_ONE)

        async def move_in_one_script(raw: bytes | str, payload: str) -> Any:
            return await script(keys=[Keys.DLQ, stream], args=[raw, payload])

        return move_in_one_script

    async def move_in_two_steps(raw: bytes | str, payload: str) -> Any:
        # The letter exactly as stored (bytes are sent as they are).
        if await redis.lpos(Keys.DLQ, raw, rank=-1) is None:  # type: ignore[arg-type]
            return None
        entry_id = await redis.xadd(stream, {"payload": payload})
        await redis.lrem(Keys.DLQ, -1, raw)  # type: ignore[arg-type]
        return entry_id

    return move_in_two_steps


async def _to_kafka(
    redis: RedisClient, send: KafkaSend, raw: bytes | str, letter: DeadLetter
) -> str | None:
    """Send one Kafka letter back to its topic, then take it off the DLQ (None: gone)."""
    if await redis.lpos(Keys.DLQ, raw, rank=-1) is None:  # type: ignore[arg-type]
        return None
    assert letter.payload is not None
    key = letter.fields.get("key")
    where = await send(
        letter.stream.removeprefix(KAFKA_PREFIX),
        letter.payload,
        key.encode() if isinstance(key, str) and key else None,
    )
    await redis.lrem(Keys.DLQ, -1, raw)  # type: ignore[arg-type]
    return where


async def purge(redis: RedisClient) -> int:
    """Delete the DLQ; returns how many letters it held (the DLQ's new length is 0)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.llen(Keys.DLQ)
        pipe.delete(Keys.DLQ)
        held, _ = await pipe.execute()
    return int(held)
