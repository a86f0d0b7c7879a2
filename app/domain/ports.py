"""The ports the worker needs from the outside world, as protocols and plain data.

``LLM`` is a chat-completions model; ``InsightStore`` is where admission, insights, dead
letters and acknowledgements go (Redis in production, a fake in tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "LLM",
    "Admission",
    "Completion",
    "CompletionRequest",
    "EntryRef",
    "InsightStore",
    "Publish",
]


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One chat-completion call: the model, the two prompt messages and output limits."""

    model: str
    system: str
    user: str
    max_completion_tokens: int
    json_schema: dict[str, Any] | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's answer: its text and what it cost."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens the provider served from its prompt cache (billed at a discount)."""
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LLM(Protocol):
    """A chat-completions model. Raises ``TransientLLMError`` or ``PermanentLLMError``.

    An adapter makes exactly one attempt per call: retries belong to the caller.
    """

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


class Admission(StrEnum):
    ADMITTED = "admitted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class EntryRef:
    """Where an entry lives, so that its XACK can join the writes of its event."""

    stream: str
    group: str
    entry_id: str


# Publishes InsightCreated in the store's transaction (its pipeline, or None without one).
Publish = Callable[[Any], Awaitable[Any]]


class InsightStore(Protocol):
    """What the service needs from the insight store (a fake implements it for tests)."""

    async def admit(
        self, *, event_id: str, tenant_id: str, budget: int, entry: EntryRef | None = None
    ) -> Admission: ...

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
    ) -> None: ...

    async def dead_letter(self, entry: EntryRef, letter_json: str) -> int: ...

    async def ack(self, entry: EntryRef) -> None: ...
