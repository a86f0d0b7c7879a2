"""The redaction processor: the API key never reaches a rendered log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from app.runtime.logs import configure_logging, get_logger

# Shaped like no credential (words, as a passphrase is), so only the explicit secrets list
# can catch it: the rules for keys of unknown format would catch a random-looking one.
KEY = "correct-horse-battery-staple-7731"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def _fail_with_key() -> None:
    api_key = KEY  # a local variable holding the key, as a client's frame would
    raise RuntimeError(f"upstream refused the request made with {api_key}")


def _emit_everything() -> None:
    log = get_logger("acp.groq_worker.test")
    log.info("configured", api_key=KEY, headers={"Authorization": f"Bearer {KEY}"})
    log.warning(f"message text carrying {KEY}")
    try:
        _fail_with_key()
    except RuntimeError as exc:
        log.exception("model_call_failed", error=exc)
    try:
        try:
            _fail_with_key()
        except RuntimeError as exc:
            raise ValueError(f"wrapped: {exc}") from exc
    except ValueError:
        logging.getLogger("some.library").exception("a library failed with key %s", KEY)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_key_never_rendered_in_fields_messages_or_tracebacks(fmt, capfd, restore_logging):
    """Fields, messages, exception tracebacks (structlog and stdlib) carry no key."""
    configure_logging(level="INFO", fmt=fmt, secrets=[KEY])
    _emit_everything()
    for handler in logging.getLogger().handlers:
        handler.flush()
    out, err = capfd.readouterr()
    rendered = out + err
    assert KEY not in rendered
    assert KEY[:16] not in rendered  # not even a prefix of it survives
    # the lines themselves were written, tracebacks included
    assert "model_call_failed" in rendered
    assert "a library failed with key" in rendered
    assert rendered.count("Traceback (most recent call last)") >= 2
    assert "_fail_with_key" in rendered
    assert "[REDACTED]" in rendered or "REDACTED" in rendered


def test_credential_shaped_values_are_redacted_without_being_listed(capfd, restore_logging):
    """A Groq-shaped key nobody listed as a secret is still removed."""
    configure_logging(level="INFO", fmt="json", secrets=[])
    other_key = "gsk_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4Y5z6"
    get_logger("acp.groq_worker.test").error("leaked", note=f"key={other_key}")
    out, err = capfd.readouterr()
    assert other_key not in out + err
    assert "leaked" in out + err


class _Credentials:
    """An object whose repr shows the key, as a client or config object's might."""

    def __repr__(self) -> str:
        return f"Credentials(api_key={KEY!r})"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_key_in_objects_bytes_and_nested_values_is_redacted(fmt, capfd, restore_logging):
    """A field holding an object, bytes, or either inside a dict renders without the key."""
    configure_logging(level="INFO", fmt=fmt, secrets=[KEY])
    log = get_logger("acp.groq_worker.test")
    log.info("client_built", client=_Credentials())
    log.info("raw_header", value=KEY.encode())
    log.info("nested", context={"client": _Credentials(), "raw": [KEY.encode()]})
    log.info("positional %s", KEY)
    out, err = capfd.readouterr()
    rendered = out + err
    assert KEY not in rendered
    assert rendered.count("[REDACTED]") >= 5
    for event in ("client_built", "raw_header", "nested", "positional"):
        assert event in rendered
