"""The ports the domain needs from the outside world, as protocols and plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["LLM", "Completion", "CompletionRequest"]


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
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LLM(Protocol):
    """A chat-completions model. Raises ``TransientLLMError`` or ``PermanentLLMError``.

    An adapter makes exactly one attempt per call: retries belong to the caller.
    """

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...
