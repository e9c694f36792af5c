"""Retry policy: exponential backoff with full jitter.

The n-th retry waits a uniformly random time in [0, min(cap, base ** n)]
seconds ("full jitter", AWS Architecture Blog, 2015): retries of many tasks that
failed together spread out instead of failing together again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """`base` and `cap` come from DTQ_WORKER_RETRY_BACKOFF_BASE / _MAX_RETRY_BACKOFF."""

    base: float = 2.0
    cap: float = 300.0

    def ceiling(self, attempt: int) -> float:
        """Longest wait before attempt `attempt + 1`, after `attempt` failures."""
        if attempt < 1:
            return 0.0
        try:
            return min(self.cap, self.base**attempt)
        except OverflowError:
            return self.cap

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retrying after the `attempt`-th failed attempt."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))


def exhausted(attempts: int, max_retries: int) -> bool:
    """True when `attempts` used up the first attempt and every retry."""
    return attempts > max_retries
