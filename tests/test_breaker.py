"""The escalation circuit breaker: opens on missed deadlines, probes once, closes on success."""

import pytest

from stream.breaker import CircuitBreaker


def test_stays_closed_while_failures_are_interrupted_by_successes():
    b = CircuitBreaker(failure_threshold=3, open_s=10)
    for t in range(10):
        b.record_failure(t)
        b.record_failure(t)
        b.record_success(t)
    assert b.state(10) == "closed" and b.allow(10)


def test_opens_after_the_threshold_and_refuses_escalation():
    b = CircuitBreaker(failure_threshold=2, open_s=5)
    b.record_failure(0.0)
    assert b.allow(0.1)
    b.record_failure(0.2)
    assert b.state(0.3) == "open"
    assert not b.allow(0.3) and not b.allow(5.1)


def test_half_open_lets_exactly_one_probe_through():
    b = CircuitBreaker(failure_threshold=1, open_s=5)
    b.record_failure(0.0)
    assert b.state(5.0) == "half_open"
    assert b.allow(5.0)
    assert not b.allow(5.1), "a second item must not escalate while the probe is out"


def test_a_successful_probe_closes_the_circuit():
    b = CircuitBreaker(failure_threshold=1, open_s=5)
    b.record_failure(0.0)
    assert b.allow(6.0)
    b.record_success(6.5)
    assert b.state(6.5) == "closed" and b.allow(6.6) and b.allow(6.7)


def test_a_failed_probe_opens_it_again_for_a_full_period():
    b = CircuitBreaker(failure_threshold=3, open_s=5)
    for t in (0.0, 0.1, 0.2):
        b.record_failure(t)
    assert b.allow(5.3)
    b.record_failure(6.0)
    assert b.state(6.0) == "open" and not b.allow(10.9)
    assert b.allow(11.0)


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, open_s=1)
