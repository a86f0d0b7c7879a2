"""The batch lane, as data and decisions: which events take it, what is kept of each while
it waits, how a Batch API file is packed and how its output lines are read.

An event that takes the lane was admitted like any other (budget, owner, duplicate) and its
prompt was built and scrubbed; what waits in Redis is that prepared request
(``LaneRequest``), never more of the event than a dead letter would keep. Groq's Batch API
takes a JSONL file of such requests (``custom_id`` = the event id) and answers them within
its completion window at a discount; what it did not answer goes back to the online lane.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from app.domain.events import Severity
from app.domain.ports import CompletionRequest
from app.domain.prompt import INSIGHT_JSON_SCHEMA

__all__ = [
    "BATCH_ENDPOINT",
    "COMPLETION_WINDOW",
    "MAX_FILE_BYTES",
    "MAX_FILE_LINES",
    "BatchRecord",
    "BatchState",
    "LanePolicy",
    "LaneRequest",
    "OutputLine",
    "pack",
    "read_output",
]

BATCH_ENDPOINT: Final = "/v1/chat/completions"  # Final: the SDK types it as this literal
COMPLETION_WINDOW = "24h"
# Groq's limits on a batch input file: the SDK documents 100 MB, and Groq's batch docs
# 50,000 requests per batch. GROQ_BATCH_MAX_EVENTS may not exceed the second; the packer
# keeps a file under the first (what does not fit waits for the next batch).
MAX_FILE_LINES = 50_000
MAX_FILE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """Which events take the batch lane (GROQ_BATCH_SEVERITIES, GROQ_BATCH_WHEN_LAG_ABOVE).

    No severities: the lane is off. With a lag threshold, the listed severities take the
    lane only while more than that many entries wait undelivered in the group (a backlog
    after an outage); without one (0), always.
    """

    severities: frozenset[Severity] = frozenset()
    lag_above: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.severities)

    def takes(self, severity: Severity, lag: int | None) -> bool:
        if severity not in self.severities:
            return False
        if self.lag_above <= 0:
            return True
        return lag is not None and lag > self.lag_above


class LaneRequest(BaseModel):
    """One admitted event waiting in the lane: its prepared request and what its outcome
    needs (the entry's fields for a dead letter, the event for the insight's record)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    tenant_id: str
    entry_id: str
    stream: str
    group: str
    recorded_at: float  # epoch seconds
    model: str
    system: str
    user: str  # already scrubbed and capped, as the online call would send it
    max_completion_tokens: int
    reasoning_effort: str | None = None
    event_json: str  # the validated event (the same JSON a dead letter keeps for replay)
    fields: dict[str, str]  # the stream entry's fields as received
    redactions: int = 0

    def completion_request(self) -> CompletionRequest:
        return CompletionRequest(
            model=self.model,
            system=self.system,
            user=self.user,
            max_completion_tokens=self.max_completion_tokens,
            json_schema=INSIGHT_JSON_SCHEMA,
            reasoning_effort=self.reasoning_effort,
        )


class BatchState(StrEnum):
    """Where one of the lane's batches is. ``submitting``: its requests are claimed and the
    file may or may not have reached Groq (a worker killed here is reconciled through the
    batch's ``metadata``); the others are Groq's statuses."""

    SUBMITTING = "submitting"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {BatchState.COMPLETED, BatchState.FAILED, BatchState.EXPIRED, BatchState.CANCELLED}
)


class BatchRecord(BaseModel):
    """The lane's own record of one batch (``local_id`` is also its ``metadata`` at Groq)."""

    model_config = ConfigDict(frozen=True)

    local_id: str
    event_ids: tuple[str, ...]
    created_at: float
    state: BatchState = BatchState.SUBMITTING
    groq_id: str | None = None


def pack(
    requests: Iterable[LaneRequest],
    line: Callable[[LaneRequest], bytes],
    *,
    max_lines: int = MAX_FILE_LINES,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[list[LaneRequest], bytes]:
    """The oldest requests that fit one input file, and the file (``line`` writes one
    request as the provider wants it); at least one request always goes (prompts are
    capped, so one line is far under the byte limit)."""
    taken: list[LaneRequest] = []
    lines: list[bytes] = []
    size = 0
    for request in requests:
        encoded = line(request)
        if taken and (len(taken) >= max_lines or size + len(encoded) > max_bytes):
            break
        taken.append(request)
        lines.append(encoded)
        size += len(encoded)
    return taken, b"".join(lines)


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of a batch's output or error file: the answer body, or why there is none."""

    custom_id: str
    body: dict[str, Any] | None
    error: str | None


def read_output(*files: bytes | None) -> dict[str, OutputLine]:
    """The lines of the output and error files by ``custom_id`` (an answer wins over an
    error for the same id; an unreadable line is skipped: its request falls back online)."""
    found: dict[str, OutputLine] = {}
    for content in files:
        for raw in (content or b"").splitlines():
            line = _output_line(raw)
            if line is not None and (line.body is not None or line.custom_id not in found):
                found[line.custom_id] = line
    return found


def _output_line(raw: bytes) -> OutputLine | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("custom_id"), str):
        return None
    response = doc.get("response") if isinstance(doc.get("response"), dict) else {}
    body = response.get("body") if isinstance(response, dict) else None
    status = response.get("status_code") if isinstance(response, dict) else None
    if status == 200 and isinstance(body, dict) and not doc.get("error"):
        return OutputLine(doc["custom_id"], body, None)
    error = doc.get("error") or (body.get("error") if isinstance(body, dict) else None)
    return OutputLine(doc["custom_id"], None, _error_text(error, status))


def _error_text(error: object, status: object) -> str:
    if isinstance(error, dict):
        text = error.get("message") or error.get("code")
        if text:
            return str(text)[:300]
    if isinstance(error, str) and error:
        return error[:300]
    return f"batch line failed (status {status})"
