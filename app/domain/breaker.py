"""A circuit breaker around the model, as pure state: the clock is passed in.

closed ──(``threshold`` failures in a row)──> open ──(``cooldown`` passed)──> half-open
half-open: one probe call is let through; its success closes the breaker, its failure
opens it again for another ``cooldown``. While open, no new event starts a model call:
the events wait in the stream instead of burning attempts against an outage.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(IntEnum):
    """Values of the ``acp_groq_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, *, threshold: int, cooldown: float) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def try_acquire(self, now: float) -> bool:
        """May a new call start now? In half-open, only one probe at a time may."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self, now: float) -> float:
        """Seconds until a call could be let through (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(self.cooldown - (now - self._opened_at), 0.0)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self, now: float) -> bool:
        """Count a failure; True when this failure opened (or re-opened) the breaker."""
        was_probe = self._probing
        self._probing = False
        self._failures += 1
        if was_probe or (self._opened_at is None and self._failures >= self.threshold):
            self._opened_at = now
            return True
        return False

    def release_probe(self) -> None:
        """A probe ended without telling anything about the model (e.g. cancelled)."""
        self._probing = False
