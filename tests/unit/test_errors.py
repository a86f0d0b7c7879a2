"""``classify_status``: which HTTP answers are worth another attempt, and what each is called."""

from __future__ import annotations

import pytest

from app.domain.errors import PermanentLLMError, TransientLLMError, classify_status

TRANSIENT = [
    (408, "timeout"),
    (409, "conflict"),
    (429, "rate_limit"),
    (498, "capacity"),
    (500, "server"),
    (502, "server"),
    (503, "server"),
    (504, "server"),
]

# (status, code, kind, model_error, configuration)
PERMANENT = [
    (400, None, "bad_request", False, False),
    (400, "json_validate_failed", "bad_request", False, False),
    (401, "invalid_api_key", "auth", False, True),
    (403, None, "permission", False, True),
    (404, None, "not_found", True, False),
    (404, "model_not_found", "not_found", True, False),
    (400, "model_not_active", "bad_request", True, False),
    (413, None, "too_large", False, False),
    (422, None, "unprocessable", False, False),
    (418, None, "client_error", False, False),
]


@pytest.mark.parametrize(("status", "kind"), TRANSIENT)
def test_transient_statuses_are_retried_under_their_kind(status: int, kind: str) -> None:
    """408, 409, 429, 498 and 5xx are transient, labelled for acp_groq_api_errors_total."""
    error = classify_status(status, "busy")
    assert isinstance(error, TransientLLMError)
    assert error.transient is True
    assert error.kind == kind
    assert error.status == status
    assert error.retry_after is None


def test_a_transient_error_carries_the_servers_retry_after() -> None:
    """A 429's retry-after reaches the service's backoff."""
    error = classify_status(429, "slow down", retry_after=2.5)
    assert isinstance(error, TransientLLMError)
    assert error.retry_after == 2.5


@pytest.mark.parametrize(
    ("status", "code", "kind", "model_error", "configuration"),
    PERMANENT,
    ids=[f"{s}-{c or 'none'}" for s, c, *_ in PERMANENT],
)
def test_permanent_statuses_are_not_retried(
    status: int, code: str | None, kind: str, model_error: bool, configuration: bool
) -> None:
    """Other 4xx are permanent; model errors allow the fast-model fallback, 401/403 alarm."""
    error = classify_status(status, "no", code=code)
    assert isinstance(error, PermanentLLMError)
    assert error.transient is False
    assert error.kind == kind
    assert error.status == status
    assert error.model_error is model_error
    assert error.configuration is configuration


def test_a_decommissioned_model_is_a_configuration_alarm_and_a_model_error() -> None:
    """400 model_decommissioned: an operator must change the model; the fast one may answer."""
    error = classify_status(400, "The model has been decommissioned", code="model_decommissioned")
    assert isinstance(error, PermanentLLMError)
    assert error.kind == "model_decommissioned"
    assert error.model_error is True
    assert error.configuration is True


def test_a_decommissioned_code_on_a_5xx_stays_transient() -> None:
    """The status decides first: a 503 is retried whatever its code says."""
    assert isinstance(classify_status(503, "x", code="model_decommissioned"), TransientLLMError)


def test_the_message_names_kind_and_status_only() -> None:
    """str() of an error is what dead letters and logs show: kind, status, provider text."""
    assert str(classify_status(500, "upstream failed")) == "server (HTTP 500): upstream failed"
    assert str(classify_status(401, "refused")) == "auth (HTTP 401): refused"
