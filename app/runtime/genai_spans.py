"""One span per model call, named and attributed by OpenTelemetry's GenAI conventions.

``chat {model}``, kind CLIENT (open-telemetry/semantic-conventions-genai,
``gen-ai-spans.md``, "Inference"): the operation, provider and requested model at the
span's start (samplers may read them), the answered model, token counts, cached input
tokens and finish reason at its end, ``error.type`` (the worker's error kind, low
cardinality) on failure. The worker's own facts have names of its own, outside the
``gen_ai.*`` namespace that belongs to the conventions: ``acp.attempt`` (1-based, of the
event's ``GROQ_MAX_ATTEMPTS``), ``acp.fallback``, ``acp.lane``, ``acp.service_tier``.

Content is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks
for it: the system instructions and user message exactly as sent (the prompt builder
scrubbed them: what the model saw, never the raw event), and the answer with every
credential shape redacted (``redact_secrets``), as JSON strings in the conventions'
message shapes. The attribute names are kept here as strings: the installed
``opentelemetry.semconv._incubating`` constants are marked "moved" (docs/tracing-notes.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from app.domain.errors import LLMError
from app.domain.ports import Completion, CompletionRequest
from app.domain.sanitize import redact_secrets
from app.runtime.tracing import Tracing

__all__ = ["traced_completion"]

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHED_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"


def _text(content: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": content}]


def _request_attributes(
    tracing: Tracing, request: CompletionRequest, *, attempt: int, fallback: bool, lane: str
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        OPERATION: "chat",
        PROVIDER: tracing.provider_name,
        REQUEST_MODEL: request.model,
        REQUEST_MAX_TOKENS: request.max_completion_tokens,
        OUTPUT_TYPE: "json",
        "acp.attempt": attempt,
        "acp.fallback": fallback,
        "acp.lane": lane,
    }
    if request.service_tier is not None:
        attributes["acp.service_tier"] = str(request.service_tier)
    if tracing.capture_content:
        attributes[SYSTEM_INSTRUCTIONS] = json.dumps(_text(request.system))
        user = [{"role": "user", "parts": _text(request.user)}]
        attributes[INPUT_MESSAGES] = json.dumps(user)
    return attributes


def _answer_attributes(tracing: Tracing, completion: Completion) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {RESPONSE_MODEL: completion.model}
    counts = (
        (INPUT_TOKENS, completion.prompt_tokens),
        (OUTPUT_TOKENS, completion.completion_tokens),
        (CACHED_INPUT_TOKENS, completion.cached_tokens),
    )
    for name, count in counts:
        if count is not None:
            attributes[name] = count
    if completion.finish_reason:
        attributes[FINISH_REASONS] = (completion.finish_reason,)
    if tracing.capture_content:
        answer = {
            "role": "assistant",
            "parts": _text(redact_secrets(completion.text)),
            "finish_reason": completion.finish_reason or "stop",
        }
        attributes[OUTPUT_MESSAGES] = json.dumps([answer])
    return attributes


async def traced_completion(
    tracing: Tracing,
    complete: Callable[[CompletionRequest], Awaitable[Completion]],
    request: CompletionRequest,
    *,
    attempt: int,
    fallback: bool,
    lane: str = "online",
) -> Completion:
    """``complete(request)`` inside its ``chat {model}`` span."""
    attributes = _request_attributes(
        tracing, request, attempt=attempt, fallback=fallback, lane=lane
    )
    with tracing.tracer.start_as_current_span(
        f"chat {request.model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,  # an exception's message is not for a span
        set_status_on_exception=False,
    ) as span:
        try:
            completion = await complete(request)
        except LLMError as exc:
            span.set_attribute(ERROR_TYPE, exc.kind)
            if exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            span.set_status(Status(StatusCode.ERROR, exc.kind))
            raise
        except BaseException as exc:
            span.set_attribute(ERROR_TYPE, type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        if span.is_recording():
            span.set_attributes(_answer_attributes(tracing, completion))
        return completion
