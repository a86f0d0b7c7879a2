"""The smallest valid audit event, for tests that add only the fields they are about."""

from __future__ import annotations

from typing import Any

from app.domain.events import AuditEvent

__all__ = ["valid_body", "valid_event"]


def valid_body(**fields: Any) -> dict[str, Any]:
    """The six required fields (evt-1 of acme's billing-agent, high, deny); ``fields``
    replace or add to them."""
    body: dict[str, Any] = {
        "event_id": "evt-1",
        "tenant_id": "acme",
        "agent_id": "billing-agent",
        "severity": "high",
        "decision": "deny",
        "timestamp": 1_795_573_200,
    }
    body.update(fields)
    return body


def valid_event(**fields: Any) -> AuditEvent:
    """``valid_body(**fields)``, parsed."""
    return AuditEvent.model_validate(valid_body(**fields))
