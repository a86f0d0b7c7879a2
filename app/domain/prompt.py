"""The prompt, built from an allow-list of the event's fields, and the parsing of the answer.

The allow-list is the contract: agent name, tool name, decision, severity, findings and
``metadata.flags``. Raw input, tool arguments and every other field never leave the
process, whatever the gateway puts in the event.
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.domain.events import AuditEvent, Finding
from app.domain.insights import Insight, Risk

__all__ = [
    "INSIGHT_JSON_SCHEMA",
    "SYSTEM_PROMPT",
    "build_insight_prompt",
    "parse_insight_answer",
    "prompt_fields",
]

SYSTEM_PROMPT = (
    "You are a security analyst reviewing decisions of an AI-agent gateway. "
    "Given one decision about an agent's tool call, write a short insight for a human "
    "analyst. Answer with a JSON object with exactly these keys: "
    '"summary" (one or two sentences on what happened), '
    '"risk" (one of "low", "medium", "high", "critical") and '
    '"recommendation" (one sentence on what the analyst should do). '
    "Never repeat secrets, credentials or personal data, even if the findings mention them."
)

INSIGHT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "risk": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "recommendation": {"type": "string"},
    },
    "required": ["summary", "risk", "recommendation"],
    "additionalProperties": False,
}


def _finding(finding: Finding | str) -> dict[str, str] | str:
    if isinstance(finding, str):
        return finding
    return {
        key: value
        for key, value in (
            ("rule", finding.rule),
            ("detail", finding.detail),
            ("severity", finding.severity.value if finding.severity else None),
        )
        if value
    }


def prompt_fields(event: AuditEvent) -> dict[str, Any]:
    """The allow-listed fields of an event: everything the model may see."""
    return {
        "agent_name": event.agent_name or event.agent_id,
        "tool_name": event.tool_name,
        "decision": event.decision,
        "severity": event.severity.value,
        "findings": [_finding(finding) for finding in event.findings],
        "flags": event.flags,
    }


def build_insight_prompt(event: AuditEvent) -> tuple[str, str]:
    """The (system, user) messages for one event, built from the allow-list only."""
    facts = json.dumps(prompt_fields(event), ensure_ascii=False, separators=(",", ":"))
    user = f"Gateway decision (JSON):\n{facts}\nAnswer in JSON."
    return SYSTEM_PROMPT, user


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def parse_insight_answer(text: str) -> Insight:
    """The model's answer as an insight. Prose instead of JSON becomes the summary."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Insight(summary=text.strip(), risk=Risk.UNKNOWN, recommendation="")
    risk = str(data.get("risk", "")).strip().lower()
    return Insight(
        summary=_as_text(data.get("summary")),
        risk=Risk(risk) if risk in Risk._value2member_map_ else Risk.UNKNOWN,
        recommendation=_as_text(data.get("recommendation")),
    )
