"""In-process fakes of the ports: an LLM that follows a script, a store kept in memory."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.domain.errors import LLMError
from app.domain.ports import (
    Admission,
    Completion,
    CompletionRequest,
    DeadLettered,
    EntryRef,
    Publish,
    ScheduleRequest,
)

__all__ = ["MemoryStore", "ScriptedLLM"]


class ScriptedLLM:
    """``LLM`` whose answers are scripted: an ``LLMError`` to raise, or a text to return.

    With the script empty it answers a valid insight JSON. Every request is recorded.
    """

    def __init__(
        self, script: Iterable[LLMError | str] = (), *, by_model: dict[str, Any] | None = None
    ):
        self.script: deque[LLMError | str] = deque(script)
        self.by_model = by_model or {}
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        action = self.by_model.get(request.model)
        if action is None and self.script:
            action = self.script.popleft()
        if isinstance(action, LLMError):
            raise action
        text = (
            action
            if isinstance(action, str)
            else json.dumps(
                {"summary": "An agent did a thing.", "risk": "medium", "recommendation": "Look."}
            )
        )
        return Completion(text=text, model=request.model, prompt_tokens=10, completion_tokens=5)

    async def aclose(self) -> None:
        return None


class _StreamRecorder:
    """A pipeline that only takes ``XADD``: the InsightCreated entries, in ``stream``."""

    def __init__(self, stream: list[dict[str, str]]) -> None:
        self._stream = stream

    def xadd(self, name: str, fields: dict[str, str], **_: Any) -> None:
        assert name == "acp:groq:insights:stream"
        self._stream.append(dict(fields))


@dataclass
class MemoryStore:
    """``InsightStore`` in memory, with the same admission rules as the Lua script."""

    budget_used: dict[str, int] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    insights: dict[str, str] = field(default_factory=dict)
    dlq: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    published: list[Any] = field(default_factory=list)
    leases: dict[str, str] = field(default_factory=dict)
    charged: set[str] = field(default_factory=set)
    stream: list[dict[str, str]] = field(default_factory=list)  # InsightCreated entries' fields

    async def admit(
        self,
        *,
        event_id: str,
        tenant_id: str,
        budget: int,
        entry: EntryRef | None = None,
        schedule: ScheduleRequest | None = None,
    ) -> Admission:
        """The Lua script's rules; it runs every event now (no scheduler in memory)."""
        owner = self.owners.get(event_id)
        if owner is not None and owner != tenant_id:
            return Admission.CONFLICT
        if event_id in self.insights:
            return Admission.DUPLICATE
        holder = self.leases.get(event_id)
        # another entry of this event, still pending (not acked), stands for it
        if entry is not None and holder not in (None, entry.entry_id, *self.acked):
            return Admission.DUPLICATE
        if event_id not in self.charged:  # each event is charged once
            used = self.budget_used[tenant_id] = self.budget_used.get(tenant_id, 0) + 1
            if used > budget:
                return Admission.RATE_LIMITED
            self.charged.add(event_id)
        self.owners[event_id] = tenant_id
        if entry is not None:
            self.leases[event_id] = entry.entry_id
        return Admission.ADMITTED

    async def write_insight(
        self,
        entry: EntryRef,
        *,
        event_id: str,
        tenant_id: str,
        agent_id: str,
        score: float,
        record_json: str,
        publish: Publish,
    ) -> None:
        self.insights[event_id] = record_json
        self.published.append(await publish(_StreamRecorder(self.stream)))
        self.acked.append(entry.entry_id)

    async def dead_letter(self, entry: EntryRef, letter_json: str) -> DeadLettered:
        self.dlq.insert(0, letter_json)
        self.acked.append(entry.entry_id)
        return DeadLettered(len(self.dlq))

    async def ack(self, entry: EntryRef) -> None:
        self.acked.append(entry.entry_id)

    async def deliveries(self, entry: EntryRef) -> int:
        return 1

    def letters(self) -> list[dict[str, Any]]:
        return [json.loads(letter) for letter in self.dlq]
