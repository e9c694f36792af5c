"""Retry policy: exponential backoff with full jitter (dtq/domain/retry.py)."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtq.domain.retry import RetryPolicy, exhausted


def test_ceiling_grows_exponentially_then_caps() -> None:
    policy = RetryPolicy(base=2.0, cap=300.0)
    assert [policy.ceiling(n) for n in range(10)] == [0, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert policy.ceiling(50) == 300.0


def test_ceiling_of_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    assert RetryPolicy(base=2.0, cap=60.0).ceiling(100_000) == 60.0


@given(
    base=st.floats(1.01, 10.0),
    cap=st.floats(0.0, 3600.0),
    attempt=st.integers(-5, 5000),
)
def test_ceiling_is_monotonic_and_bounded(base: float, cap: float, attempt: int) -> None:
    policy = RetryPolicy(base=base, cap=cap)
    assert 0.0 <= policy.ceiling(attempt) <= max(cap, 0.0)
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


@given(attempt=st.integers(0, 5000), seed=st.integers(0, 2**32))
def test_delay_is_within_zero_and_the_ceiling(attempt: int, seed: int) -> None:
    policy = RetryPolicy()
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.ceiling(attempt)


def test_no_wait_before_any_failure() -> None:
    assert RetryPolicy().delay(0, random.Random(1)) == 0.0


def test_full_jitter_spreads_over_the_whole_window() -> None:
    policy, rng = RetryPolicy(base=2.0, cap=300.0), random.Random(7)
    ceiling = policy.ceiling(8)
    draws = [policy.delay(8, rng) for _ in range(1000)]
    assert len(set(draws)) > 990
    assert min(draws) < 0.05 * ceiling
    assert max(draws) > 0.95 * ceiling
    # A uniform distribution on [0, c] has mean c/2 and deviation c/sqrt(12) = 0.289c.
    assert statistics.mean(draws) == pytest.approx(ceiling / 2, rel=0.1)
    assert statistics.stdev(draws) == pytest.approx(0.289 * ceiling, rel=0.1)


def test_delay_uses_the_module_random_without_an_rng() -> None:
    policy = RetryPolicy(base=2.0, cap=10.0)
    draws = {policy.delay(5) for _ in range(100)}
    assert len(draws) > 90
    assert all(0.0 <= d <= 10.0 for d in draws)


@pytest.mark.parametrize(
    ("attempts", "max_retries", "expected"),
    [(0, 0, False), (1, 0, True), (1, 3, False), (3, 3, False), (4, 3, True), (101, 100, True)],
)
def test_exhausted_after_the_first_attempt_and_every_retry(
    attempts: int, max_retries: int, expected: bool
) -> None:
    assert exhausted(attempts, max_retries) is expected
