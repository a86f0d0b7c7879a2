"""Retention of the inbound stream: trim what every consumer group has acknowledged.

The worker acks entries but the stream keeps them; left alone it grows until Redis is
full and the gateway's XADD fails. With ``STREAM_RETENTION=acked`` (the default) a
background loop trims it every ``STREAM_TRIM_INTERVAL_SECONDS``. Safety comes from the
construction, not from timing:

1. **Plan from a snapshot** (``app/domain/retention.py``): ``XINFO GROUPS`` and, per
   group, the smallest id of the ``XPENDING`` summary give the *acked floor*, the id
   below which every group has been delivered and has acknowledged every entry (another
   group, an archiver or a second service, never loses an entry it has not read;
   nothing pending anywhere is removed). No group, or a group that read nothing: no
   plan. ``XLEN`` bounds the plan to the oldest ``XLEN - STREAM_KEEP_ENTRIES`` entries.
2. **Trim in one script** (``_TRIM``), atomically, after re-checking what could have
   changed since the snapshot: a group created, or a group moved back
   (``XGROUP SETID``), voids the plan; ``XLEN`` is read again, so entries trimmed
   meanwhile by another worker count against ``STREAM_KEEP_ENTRIES`` (two workers can
   never trim more than one would). Nothing else can lower the floor: acked entries
   never become pending again. The script reads the ids of at most ``batch`` entries
   below the floor (``XRANGE - (floor COUNT n``), so its cost is bounded by what it
   removes, and trims with ``XTRIM MINID ~ <cut>``. A pass repeats the step while a
   whole batch went, so a large backlog of acked entries is cleared in one pass.

``~`` (approximate trimming) lets Redis free whole nodes of the stream's radix tree
instead of rewriting a partly trimmed one. It never removes an entry that an exact trim
would keep: it may only keep a few more, up to one node (``stream-node-max-entries``,
100 by default, fewer for large entries). So the stream holds between
``STREAM_KEEP_ENTRIES`` and about ``STREAM_KEEP_ENTRIES + 100`` entries once everything
is acknowledged.

**One worker at a time** does a pass: a Redis lock (``SET acp:groq:retention:{stream}
<token> NX PX``, released by a compare-and-delete script). The trim is atomic and
idempotent, so the lock is about cost, not safety: without it every worker would read
the groups each interval; with it, whichever worker gets the lock does the pass and the
others skip it. A worker killed holding it only delays the next pass until the lock
expires.

A Redis outage never stops the worker: a failed pass is logged once, counted in
``acp_groq_redis_errors_total{operation="retention"}``, and retried at the next interval.
Redis 8.2's ``XTRIM ... ACKED`` would do step 2 on the server; it is not used, as the
worker must work on Redis 7.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, ResponseError

from app.domain.keys import Keys
from app.domain.retention import GroupState, StreamId, TrimPlan, plan_trim
from app.domain.text import as_text
from app.runtime.logs import get_logger
from app.runtime.state import wait_or_timeout
from app.settings import RetentionMode

if TYPE_CHECKING:
    from app.adapters.redis_clients import RedisClient
    from app.runtime.metrics import Metrics
    from app.settings import Settings

__all__ = ["Snapshot", "StepResult", "StreamRetention", "read_groups", "start_retention"]

log = get_logger("acp.groq_worker.retention")

TRIM_BATCH = 1_000  # entries per script call; it reads them first: ~2 ms of Redis here
MAX_STEPS_PER_PASS = 100  # a pass removes at most TRIM_BATCH x this many entries
LOCK_TTL_MS = 60_000  # longer than a pass takes; a dead holder delays trimming this long

# KEYS[1] the stream. ARGV[1] the acked floor, ARGV[2] at most this many entries,
# ARGV[3] STREAM_KEEP_ENTRIES, ARGV[4] '1' for approximate trimming, then each group's
# name and last-delivered id as seen when the plan was made.
# Returns {removed, why, ids read below the floor}.
_TRIM = """
local function cmp(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams < #bms and -1 or 1 end
  if ams ~= bms then return ams < bms and -1 or 1 end
  if #aseq ~= #bseq then return #aseq < #bseq and -1 or 1 end
  if aseq ~= bseq then return aseq < bseq and -1 or 1 end
  return 0
end
local seen = {}
for i = 5, #ARGV, 2 do seen[ARGV[i]] = ARGV[i + 1] end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and groups.err then return {0, 'no-stream', 0} end
if #groups == 0 then return {0, 'no-groups', 0} end
for _, group in ipairs(groups) do
  local info = {}
  for j = 1, #group, 2 do info[group[j]] = group[j + 1] end
  local before = seen[info['name']]
  if before == nil then return {0, 'group-added', 0} end
  if cmp(info['last-delivered-id'], before) < 0 then return {0, 'group-moved-back', 0} end
end
local room = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
local at_most = math.min(tonumber(ARGV[2]), room)
if at_most <= 0 then return {0, 'keep', 0} end
local doomed = redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[1], 'COUNT', at_most)
if #doomed == 0 then return {0, 'nothing-below-floor', 0} end
local cut = ARGV[1]
if #doomed == at_most then
  local after = redis.call('XRANGE', KEYS[1], '(' .. doomed[#doomed][1], '+', 'COUNT', 1)
  if after[1] and cmp(after[1][1], cut) < 0 then cut = after[1][1] end
end
local removed
if ARGV[4] == '1' then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', cut)
else
  removed = redis.call('XTRIM', KEYS[1], 'MINID', cut)
end
return {removed, 'trimmed', #doomed}
"""
_TRIM_SHA = hashlib.sha1(_TRIM.encode()).hexdigest()

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _field(info: dict[Any, Any], name: str) -> Any:
    return info[name] if name in info else info.get(name.encode())


async def read_groups(redis: RedisClient, stream: str) -> list[GroupState]:
    """Every consumer group of ``stream``: last-delivered id and oldest pending entry."""
    try:
        replies = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    names = [as_text(_field(info, "name")) for info in replies]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xpending(stream, name)
        summaries = await pipe.execute()
    groups = []
    for info, name, summary in zip(replies, names, summaries, strict=True):
        oldest = summary.get("min") if summary.get("pending") else None
        groups.append(
            GroupState(
                name=name,
                last_delivered=StreamId.parse(as_text(_field(info, "last-delivered-id"))),
                oldest_pending=StreamId.parse(as_text(oldest)) if oldest else None,
            )
        )
    return groups


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A trim plan and the groups' state it was made from (the script re-checks them)."""

    plan: TrimPlan
    groups: tuple[GroupState, ...]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One trim step: entries removed, and why it stopped (``trimmed``, ``keep``, ...)."""

    removed: int
    outcome: str
    full_batch: bool = False  # a whole batch was below the floor: there may be more


class StreamRetention:
    """The retention loop of one worker process."""

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        metrics: Metrics,
        *,
        batch: int = TRIM_BATCH,
        approximate: bool = True,
        lock_ttl_ms: int = LOCK_TTL_MS,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._metrics = metrics
        self._stream = settings.insight_stream
        self._keep = settings.stream_keep_entries
        self._batch = batch
        self._approximate = approximate
        self._lock_key = Keys.retention_lock(self._stream)
        self._lock_ttl_ms = lock_ttl_ms
        self._stopping = asyncio.Event()
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._settings.stream_retention is RetentionMode.ACKED

    def stop(self) -> None:
        self._stopping.set()

    async def snapshot(self) -> Snapshot | None:
        """Read the groups and ``XLEN`` and plan a step; None when nothing may go."""
        groups = await read_groups(self._redis, self._stream)
        length = int(await self._redis.xlen(self._stream))
        plan = plan_trim(groups, length=length, keep=self._keep, batch=self._batch)
        return Snapshot(plan, tuple(groups)) if plan is not None else None

    async def apply(self, snapshot: Snapshot) -> StepResult:
        """Trim as ``snapshot`` planned, in one script that re-checks it against Redis now."""
        plan = snapshot.plan
        args: list[Any] = [str(plan.below), plan.at_most, self._keep, int(self._approximate)]
        for group in snapshot.groups:
            args += [group.name, str(group.last_delivered)]
        try:
            reply = await self._redis.evalsha(_TRIM_SHA, 1, self._stream, *args)
        except NoScriptError:
            reply = await self._redis.eval(_TRIM, 1, self._stream, *args)
        removed, outcome, read = int(reply[0]), as_text(reply[1]), int(reply[2])
        if removed:
            self._metrics.stream_trimmed.inc(removed)
        return StepResult(removed, outcome, full_batch=read >= plan.at_most == self._batch)

    async def step(self) -> StepResult:
        """Plan, then trim (no lock: any number of workers may step at once)."""
        snapshot = await self.snapshot()
        if snapshot is None:
            return StepResult(0, "nothing-to-trim")
        return await self.apply(snapshot)

    async def trim(self) -> int:
        """Trim steps until nothing more may go (bounded); returns the entries removed."""
        removed = 0
        started = time.monotonic()
        for _ in range(MAX_STEPS_PER_PASS):
            result = await self.step()
            removed += result.removed
            # a step that read a whole batch may have left more below the floor
            if not (result.full_batch and result.removed) or self._stopping.is_set():
                break
            if time.monotonic() - started > self._lock_ttl_ms / 2000:
                break
        return removed

    async def run_pass(self) -> int | None:
        """One pass under the lock; None when another worker holds it."""
        token = f"{self._settings.worker_id}:{uuid.uuid4().hex}"
        if not await self._redis.set(self._lock_key, token, nx=True, px=self._lock_ttl_ms):
            return None
        try:
            removed = await self.trim()
        finally:
            with contextlib.suppress(Exception):  # an outage: the lock expires by itself
                await self._redis.eval(_RELEASE, 1, self._lock_key, token)
        if removed:
            log.info("stream_trimmed", stream=self._stream, removed=removed)
        return removed

    async def run(self) -> None:
        """Trim every ``STREAM_TRIM_INTERVAL_SECONDS`` until stopped; never raises."""
        if not self.enabled:
            log.info("stream_retention_off", stream=self._stream)
            return
        interval = self._settings.stream_trim_interval_seconds
        log.info("stream_retention_on", stream=self._stream, keep=self._keep, interval=interval)
        while not self._stopping.is_set():
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or refusing: say it once, count, go on
                self._metrics.redis_errors.labels(operation="retention").inc()
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "stream_trim_failed",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_every=interval,
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.info("stream_trim_recovered")
            await wait_or_timeout(self._stopping, interval)


def start_retention(redis: RedisClient, settings: Settings, metrics: Metrics) -> asyncio.Task[None]:
    """The retention loop as a background task of the worker (returns at once when off)."""
    return asyncio.create_task(
        StreamRetention(redis, settings, metrics).run(), name="stream-retention"
    )
