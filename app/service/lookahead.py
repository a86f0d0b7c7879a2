"""Urgent events found ahead of a flood, scheduled before the group reaches them.

The scheduler orders what has been read. Behind a flood, what has not been read waits for
the subscriber to read through it, about 3,000 entries a second per process (FastStream's
handling of each entry dominates): a critical event written behind 100,000 unread ones
would wait half a minute before the scheduler could put it first. So while the group's lag
is over ``min_lag``, each process takes the next chunk of unread entries (a shared cursor
hands each chunk to one process: ``StreamAhead``), and schedules the critical and high
events in it at once (``InsightService.look_ahead``: admitted, charged once, a job, its
entry marked). The rest is left to the subscriber. When the group reaches a marked entry,
its delivery is acknowledged without an outcome: the job's is the event's.

Reading ahead costs a JSON parse of entries that might be urgent (a byte search for the
severity first), about 5 µs each, and nothing while the group keeps up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

import structlog
from pydantic import ValidationError

from app.domain.dead_letters import entry_size
from app.domain.errors import StoreUnavailable
from app.domain.events import AuditEvent
from app.domain.ports import Received, StreamAhead
from app.domain.routing import URGENT_SEVERITIES
from app.runtime.metrics import Metrics
from app.runtime.state import WorkerState

__all__ = ["Lookahead"]

log = structlog.get_logger("acp.groq_worker.lookahead")

_PAYLOAD = b"payload"
_URGENT = {severity.value for severity in URGENT_SEVERITIES}
_URGENT_BYTES = tuple(f'"{severity}"'.encode() for severity in sorted(_URGENT))


class Lookahead:
    """``schedule`` schedules one event read ahead; True when it did (False: the store
    said no: a duplicate, a delivery already on it, a budget spent)."""

    def __init__(
        self,
        stream: StreamAhead,
        schedule: Callable[[AuditEvent, Received], Awaitable[bool]],
        state: WorkerState,
        metrics: Metrics,
        *,
        max_event_bytes: int,
        min_lag: int = 256,
        chunk: int = 2000,
        poll_seconds: float = 0.2,
    ) -> None:
        self._stream = stream
        self._schedule = schedule
        self._state = state
        self._metrics = metrics
        self._max_event_bytes = max_event_bytes
        self._min_lag = min_lag
        self._chunk = chunk
        self._poll = poll_seconds

    async def run(self) -> None:
        """Until the worker stops: while the lag is long, look ahead chunk by chunk."""
        while not self._state.stopping.is_set():
            try:
                found = await self.once()
            except StoreUnavailable as exc:
                log.warning("lookahead_failed", error=str(exc))
                found = 0
            if not found and await self._state.pause(self._poll):
                return
            await asyncio.sleep(0)  # the event path goes on between chunks

    async def once(self) -> int:
        """One look ahead: how many entries it read (0: the group keeps up)."""
        lag = await self._stream.lag()
        if lag is None or lag < self._min_lag:
            return 0
        chunk = await self._stream.next_chunk(self._chunk)
        scheduled = 0
        for entry_id, fields in chunk:
            event = self._urgent(fields)
            if event is not None:
                payload = fields[_PAYLOAD]
                received = Received(entry_id, fields, payload, _PAYLOAD.decode())
                scheduled += await self._schedule(event, received)
        self._metrics.lookahead_read.inc(len(chunk))
        if scheduled:
            self._metrics.lookahead_scheduled.inc(scheduled)
            log.info("lookahead_scheduled", events=scheduled, read=len(chunk), lag=lag)
        return len(chunk)

    def _urgent(self, fields: Mapping[bytes, bytes]) -> AuditEvent | None:
        """The event of an entry in the gateway's format, if it is valid and urgent; any
        other entry is the subscriber's (it dead-letters what is invalid)."""
        payload = fields.get(_PAYLOAD)
        if not payload or entry_size(fields) > self._max_event_bytes:
            return None
        if not any(word in payload for word in _URGENT_BYTES):
            return None
        try:
            document = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("severity") not in _URGENT:
            return None
        try:  # as the subscriber validates it
            return AuditEvent.model_validate_json(payload)
        except ValidationError:
            return None
