"""The circuit breaker's states, driven by an explicit clock."""

from __future__ import annotations

from app.domain.breaker import BreakerState, CircuitBreaker


def test_it_opens_after_threshold_failures_in_a_row():
    """Threshold consecutive failures open it; a success in between resets the count."""
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()
    assert not breaker.record_failure(1)
    assert not breaker.record_failure(1)
    assert breaker.record_failure(1)
    assert breaker.state(1) is BreakerState.OPEN
    assert not breaker.try_acquire(5)
    assert breaker.retry_in(5) == 6


def test_after_the_cooldown_one_probe_goes_through():
    """Half-open lets exactly one call through until it reports back."""
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    breaker.record_failure(0)
    assert breaker.state(10) is BreakerState.HALF_OPEN
    assert breaker.try_acquire(10)
    assert not breaker.try_acquire(10)


def test_a_successful_probe_closes_it():
    """The probe's success closes the breaker for every caller."""
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    breaker.record_failure(0)
    assert breaker.try_acquire(11)
    breaker.record_success()
    assert breaker.state(11) is BreakerState.CLOSED
    assert breaker.try_acquire(11)


def test_a_failed_probe_opens_it_for_another_cooldown():
    """The probe's failure re-opens the breaker from that moment."""
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    breaker.record_failure(0)
    assert breaker.try_acquire(12)
    assert breaker.record_failure(12)
    assert breaker.state(15) is BreakerState.OPEN
    assert breaker.state(22) is BreakerState.HALF_OPEN


def test_a_released_probe_lets_the_next_call_probe():
    """A probe that ended without an answer (cancelled) frees the probe slot."""
    breaker = CircuitBreaker(threshold=1, cooldown=1)
    breaker.record_failure(0)
    assert breaker.try_acquire(2)
    breaker.release_probe()
    assert breaker.try_acquire(2)


def test_failures_while_open_do_not_extend_the_cooldown():
    """Calls already in flight failing after it opened leave the open time as it was."""
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    breaker.record_failure(0)
    assert not breaker.record_failure(5)
    assert breaker.state(10) is BreakerState.HALF_OPEN
