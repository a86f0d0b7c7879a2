"""The worker's error tree, written down once; the handler maps each leaf to an outcome.

::

    WorkerError
    ├── InvalidEvent            the entry is not a valid event      -> dead letter "invalid"
    ├── ScrubFailed             the prompt could not be scrubbed:   -> never sent; retried
    │                           it is not sent                         by redelivery, then
    │                                                                  "scrub_failed"
    └── LLMError                the model could not give an answer
        ├── TransientLLMError   worth another attempt: timeouts, connection errors,
        │                       408, 409, 429, 498 and 5xx           -> retried, then
        │                                                               "llm_exhausted"
        └── PermanentLLMError   another attempt cannot help: 400, 401, 403, 404, 413,
                                422 and other 4xx                    -> "llm_permanent"

``kind`` is the label of ``acp_groq_api_errors_total{error_type}``. Messages never hold
the API key: adapters build them from status codes and the provider's error text only.
"""

from __future__ import annotations

__all__ = [
    "InvalidEvent",
    "LLMError",
    "PermanentLLMError",
    "Postponed",
    "ScrubFailed",
    "StoreUnavailable",
    "TransientLLMError",
    "WaitForCapacity",
    "WorkerError",
    "classify_status",
]


class WorkerError(Exception):
    """Base of every error the worker maps to an outcome."""


class InvalidEvent(WorkerError):
    """The stream entry is not a valid event: not JSON, not an object, bad fields, too big."""

    def __init__(self, error: str, *, event_id: str | None = None, tenant_id: str | None = None):
        super().__init__(error)
        self.error = error
        self.event_id = event_id
        self.tenant_id = tenant_id


class ScrubFailed(WorkerError):
    """Building or scrubbing the prompt raised: the prompt is not sent, ever.

    The message names the exception's type only (its text could quote what was being
    scrubbed).
    """

    def __init__(self, cause: BaseException):
        super().__init__(
            f"the prompt could not be scrubbed ({type(cause).__name__}); it was not sent"
        )
        self.cause_type = type(cause).__name__


class LLMError(WorkerError):
    """The model call failed. ``kind`` names the failure for metrics and dead letters.

    ``attempts`` is how many requests the event had made when it gave up (set by the
    retry layer; 1 for an error of a single request).
    """

    transient: bool = False

    def __init__(self, kind: str, message: str, *, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.attempts = attempts

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.kind}{status}: {self.message}"


class TransientLLMError(LLMError):
    """Another attempt may succeed. ``retry_after`` is the server's hint, in seconds."""

    transient = True

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(kind, message, status=status)
        self.retry_after = retry_after
        # the answer's x-ratelimit-* headers (lower-cased), for the shared rate limiter
        self.headers = headers or {}


class PermanentLLMError(LLMError):
    """Another attempt with the same request cannot succeed.

    ``model_error`` marks failures of the model itself (not found, decommissioned), after
    which the event is tried once on the fast model; ``configuration`` marks errors an
    operator must fix (a bad key, a decommissioned model).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        model_error: bool = False,
        configuration: bool = False,
    ):
        super().__init__(kind, message, status=status)
        self.model_error = model_error
        self.configuration = configuration


_TRANSIENT_KINDS = {408: "timeout", 409: "conflict", 429: "rate_limit", 498: "capacity"}
_PERMANENT_KINDS = {
    400: "bad_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    413: "too_large",
    422: "unprocessable",
}


def classify_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> LLMError:
    """The error for an HTTP status of a chat-completions API (Groq's or compatible)."""
    if status in _TRANSIENT_KINDS or status >= 500:
        kind = _TRANSIENT_KINDS.get(status, "server")
        return TransientLLMError(
            kind, message, status=status, retry_after=retry_after, headers=headers
        )
    if code == "model_decommissioned":
        return PermanentLLMError(
            "model_decommissioned", message, status=status, model_error=True, configuration=True
        )
    kind = _PERMANENT_KINDS.get(status, "client_error")
    model_error = status == 404 or code in {"model_not_found", "model_not_active"}
    return PermanentLLMError(
        kind,
        message,
        status=status,
        model_error=model_error,
        configuration=status in {401, 403},
    )


class Postponed(Exception):
    """The event was not started (the worker is stopping): its entry stays pending."""


class WaitForCapacity(Exception):
    """Groq's flex tier is full (498 ``capacity_exceeded``) for an event that may wait: not
    a failure. It tries again in ``retry_in`` seconds; its attempts are not spent."""

    def __init__(self, retry_in: float):
        super().__init__(f"flex capacity exceeded; trying again in {retry_in:.1f}s")
        self.retry_in = retry_in


class StoreUnavailable(WorkerError):
    """Redis did not answer or refused for now (OOM, READONLY, ...): wait and try again.

    ``reason`` is short and safe to show (``OOM``, ``READONLY``, ``ConnectionError``).
    """

    def __init__(self, message: str, *, reason: str = "unavailable"):
        super().__init__(message)
        self.reason = reason
