"""The circuit breaker: opens after failures, fails fast, probes, closes."""

from __future__ import annotations

import pytest

from dtq.adapters.breaker import CircuitBreaker, State
from dtq.domain.errors import Code, DtqError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_fails_fast_with_retry_info() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", threshold=3, cooldown=2.0, clock=clock)
    for _ in range(2):
        breaker.before()
        breaker.failure()
    assert breaker.state == State.CLOSED
    breaker.before()
    breaker.failure()
    assert breaker.state == State.OPEN
    with pytest.raises(DtqError) as refused:
        breaker.before()
    assert refused.value.code == Code.UNAVAILABLE
    assert refused.value.reason == "REDIS_UNAVAILABLE"
    assert refused.value.retry_after == pytest.approx(2.0)


def test_half_open_lets_one_probe_through_then_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("postgres", threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.5
    breaker.before()  # the probe
    assert breaker.state == State.HALF_OPEN
    with pytest.raises(DtqError):
        breaker.before()  # only one probe at a time
    breaker.success()
    assert breaker.state == State.CLOSED
    breaker.before()


def test_failed_probe_reopens_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker("postgres", threshold=2, cooldown=1.0, clock=clock)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == State.CLOSED  # failures must be consecutive
    breaker.failure()
    clock.now += 1.0
    breaker.before()
    breaker.failure()
    assert breaker.state == State.OPEN


def test_a_probe_ending_without_a_verdict_frees_the_next_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    breaker.before()
    breaker.release()  # e.g. the call was cancelled
    breaker.before()  # another probe may go
