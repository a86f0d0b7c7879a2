"""The ``offline`` provider: a deterministic local insight, no network, no key.

It reads the same prompt a real model gets (so it sees only the allow-listed fields)
and answers with the same JSON shape. Used by the demo, by local runs and as a
stand-in where no model is reachable.
"""

from __future__ import annotations

import json
from typing import Any

from app.adapters.groq_batches import batch_results  # the same reading as Groq's
from app.domain.ports import BatchStatus, Completion, CompletionRequest

__all__ = ["OfflineBatchAPI", "OfflineLLM"]

_RISK_BY_SEVERITY = {"low": "low", "medium": "medium", "high": "high", "critical": "critical"}
_ADVICE = {
    "deny": "Confirm the block was right and review what the agent was trying to do.",
    "escalate": "Review the escalated call and approve or reject it.",
    "allow": "No action needed unless the findings are unexpected for this agent.",
}


def _facts(user_message: str) -> dict[str, Any]:
    start, end = user_message.find("{"), user_message.rfind("}")
    if start < 0 or end < start:
        return {}
    try:
        facts = json.loads(user_message[start : end + 1])
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}


def _finding_text(finding: object) -> str:
    if isinstance(finding, dict):
        return str(finding.get("rule") or finding.get("detail") or "finding")
    return str(finding)


class OfflineLLM:
    """``LLM`` without a model: the insight is derived from the prompt's facts."""

    name = "offline"

    def __init__(self) -> None:
        # Prompt caching as Groq reports it: a system message this model saw before is a
        # cached prefix, so the demo shows what the fixed instructions save.
        self._prefixes: set[tuple[str, str]] = set()

    def _cached_tokens(self, request: CompletionRequest) -> int:
        prefix = (request.model, request.system)
        if prefix in self._prefixes:
            return len(request.system) // 4
        self._prefixes.add(prefix)
        return 0

    async def complete(self, request: CompletionRequest) -> Completion:
        facts = _facts(request.user)
        agent = facts.get("agent_name") or "the agent"
        tool = facts.get("tool_name") or "a tool"
        decision = str(facts.get("decision") or "unknown")
        severity = str(facts.get("severity") or "unknown")
        findings = [_finding_text(f) for f in facts.get("findings") or []]
        flags = [str(flag) for flag in facts.get("flags") or []]
        summary = f"{agent} called {tool}; the gateway decided {decision} ({severity} severity)."
        if findings:
            summary += " Findings: " + ", ".join(findings[:5]) + "."
        if flags:
            summary += " Flags: " + ", ".join(flags[:5]) + "."
        answer = {
            "summary": summary,
            "risk": _RISK_BY_SEVERITY.get(severity, "medium"),
            "recommendation": _ADVICE.get(
                decision, "Review the decision against the agent's expected behaviour."
            ),
        }
        text = json.dumps(answer)
        return Completion(
            text=text,
            model=f"offline/{request.model}",
            prompt_tokens=(len(request.system) + len(request.user)) // 4,
            completion_tokens=len(text) // 4,
            cached_tokens=self._cached_tokens(request),
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        return None


class OfflineBatchAPI:
    """``BatchAPI`` without a provider: a batch is answered by ``OfflineLLM`` when submitted
    and reads as completed from then on (batches live in this process only: the demo)."""

    def __init__(self, llm: OfflineLLM | None = None) -> None:
        self._llm = llm or OfflineLLM()
        self._batches: dict[str, BatchStatus] = {}
        self._files: dict[str, bytes] = {}

    def line(self, custom_id: str, request: CompletionRequest) -> bytes:
        body = {"model": request.model, "system": request.system, "user": request.user}
        return json.dumps({"custom_id": custom_id, "body": body}).encode() + b"\n"

    async def submit(self, local_id: str, content: bytes) -> str:
        batch_id = f"offline_batch_{len(self._batches) + 1}"
        answers = []
        for raw in content.splitlines():
            line = json.loads(raw)
            body = line["body"]
            request = CompletionRequest(
                model=body["model"],
                system=body["system"],
                user=body["user"],
                max_completion_tokens=1024,
            )
            answer = await self._llm.complete(request)
            completion = {
                "model": answer.model,
                "choices": [
                    {
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": answer.cached_tokens or 0},
                },
            }
            answers.append(
                {
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "body": completion},
                    "error": None,
                }
            )
        output_id = f"{batch_id}_output"
        self._files[output_id] = "".join(json.dumps(a) + "\n" for a in answers).encode()
        self._batches[batch_id] = BatchStatus(
            batch_id=batch_id,
            status="completed",
            output_file_id=output_id,
            local_id=local_id,
            completed=len(answers),
            total=len(answers),
        )
        return batch_id

    async def find(self, local_id: str) -> BatchStatus | None:
        return next((b for b in self._batches.values() if b.local_id == local_id), None)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        return self._batches[batch_id]

    async def results(self, status: BatchStatus) -> dict[str, Completion | str]:
        return batch_results(self._files[status.output_file_id or ""])

    async def cancel(self, batch_id: str) -> BatchStatus:
        return self._batches[batch_id]  # answered at once: nothing left to cancel

    async def aclose(self) -> None:
        return None
