"""What the handler wiring tests of both brokers share: an event, and what was announced."""

from __future__ import annotations

from typing import Any

from app.domain.insights import InsightCreated
from tests.support.fakes import MemoryStore


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event with a field the prompt never carries (``raw_input``)."""
    body: dict[str, Any] = {
        "event_id": "evt-1",
        "tenant_id": "acme",
        "agent_id": "bot",
        "severity": "medium",
        "decision": "allow",
        "timestamp": 1_795_573_200,
        "raw_input": "do not send me",
    }
    body.update(overrides)
    return body


def announced(store: MemoryStore) -> list[InsightCreated]:
    """The InsightCreated messages the store's entries carry, read as a plain client would."""
    return [InsightCreated.model_validate_json(fields["payload"]) for fields in store.stream]
