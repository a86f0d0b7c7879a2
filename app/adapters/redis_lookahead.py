"""The inbound stream ahead of the group's position, in chunks each process takes once.

The look-ahead (``app/service/lookahead.py``) reads what the group has not delivered yet.
A shared cursor (``Keys.SCHED_AHEAD_CURSOR``, the last entry id handed out) makes the
chunks of several processes disjoint: one script reads the chunk after the cursor, or,
when the group has caught up with it, after the ``margin`` entries past the group's
position (its next reads take those), and moves the cursor past it. Reading takes
nothing from the group: the entries stay undelivered, each read again by the group in
its turn (``XRANGE`` is not ``XREADGROUP``). The cursor key and the stream are in different
slots: this runs on a single Redis only, as the scheduler does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from app.adapters import inspect
from app.adapters.redis_store import unavailable_as_domain_error
from app.domain.keys import Keys
from app.domain.text import as_text

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient

__all__ = ["RedisStreamAhead"]

# KEYS: stream, cursor. ARGV: the group's last delivered id, how many, the cursor's TTL,
# how many entries past the group's position to leave to it (the next reads take them:
# their urgent events go in stream order, before the later ones the look-ahead finds).
_NEXT_CHUNK = """
local function after(a, b)
  local am, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bm, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return false end
  am, aseq, bm, bseq = tonumber(am), tonumber(aseq), tonumber(bm), tonumber(bseq)
  return am > bm or (am == bm and aseq > bseq)
end
local start = ARGV[1]
local cursor = redis.call('GET', KEYS[2])
if cursor and after(cursor, start) then
  start = cursor
else
  local near = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', ARGV[4])
  if #near > 0 then start = near[#near][1] end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', ARGV[2])
if #entries > 0 then
  redis.call('SET', KEYS[2], entries[#entries][1], 'EX', ARGV[3])
end
return entries
"""

_CURSOR_TTL_SECONDS = 86_400  # forgotten a day after the last look-ahead


class RedisStreamAhead:
    def __init__(self, redis: RedisClient, *, stream: str, group: str, margin: int) -> None:
        """``margin``: entries past the group's position left to its next reads."""
        self._redis = redis
        self._stream = stream
        self._group = group
        self._margin = margin
        self._script = redis.register_script(_NEXT_CHUNK)
        self._position = "0-0"

    async def lag(self) -> int | None:
        async with unavailable_as_domain_error("lookahead_lag"):
            info = await inspect.group_info(self._redis, self._stream, self._group)
        if info is None:
            return None
        self._position = info.last_delivered_id or "0-0"
        return info.lag

    async def next_chunk(self, count: int) -> list[tuple[str, Mapping[bytes, bytes]]]:
        """The chunk after the position ``lag()`` last saw (and after the shared cursor)."""
        keys = [self._stream, Keys.SCHED_AHEAD_CURSOR]
        async with unavailable_as_domain_error("lookahead_read"):
            args: list[str | int] = [self._position, count, _CURSOR_TTL_SECONDS, self._margin]
            rows = await self._script(keys, args)
        chunk: list[tuple[str, Mapping[bytes, bytes]]] = []
        for entry_id, flat in rows:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            chunk.append((as_text(entry_id), fields))
        return chunk
