"""When the client tries a call again, and after how long.

Every submission carries an idempotency key, so sending it again after a lost
reply returns the task the first attempt created instead of a duplicate. Reads
and pause/resume are safe to repeat too. Cancel and retry are not repeated after
DEADLINE_EXCEEDED: the first attempt may have taken effect.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from dtq.client.errors import DtqClientError

SAFE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# For calls that must not run twice: codes that say the server did not act.
UNSENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_RETRY_AFTER = 60.0  # seconds: a server's RetryInfo is honoured up to this


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter.

    `attempts` counts every try (1 disables retries). The n-th wait is drawn
    between half and all of `min(maximum, initial * multiplier**n)` seconds,
    unless the server's `RetryInfo` names a delay, which wins. RESOURCE_EXHAUSTED
    is retried only with `RetryInfo` (the server's rate limits and quotas send
    it: RATE_LIMITED, QUEUED_CAP), after the delay it names (at most
    MAX_RETRY_AFTER). `only`: retry these codes and no others (None: every code
    the call allows). `on_retry(error, seconds)` is called before each wait
    (the CLI says so on stderr).
    """

    attempts: int = 8
    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    only: frozenset[grpc.StatusCode] | None = None
    on_retry: Callable[[DtqClientError, float], None] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial < 0 or self.maximum < self.initial:
            raise ValueError("RetryPolicy needs attempts >= 1 and 0 <= initial <= maximum")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try number `attempt` (0-based)."""
        ceiling = min(self.maximum, self.initial * self.multiplier**attempt)
        return ceiling / 2 + random.random() * ceiling / 2

    def delay(
        self, error: DtqClientError, attempt: int, codes: frozenset[grpc.StatusCode] = SAFE
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise."""
        if error.code not in codes or attempt + 1 >= self.attempts:
            return None
        if self.only is not None and error.code not in self.only:
            return None
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is None:
            return None  # gRPC's own (a message too large): waiting cannot help
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), MAX_RETRY_AFTER)
        return self.backoff(attempt)

    def waiting(self, error: DtqClientError, seconds: float) -> None:
        """About to wait `seconds` before trying again after `error`."""
        if self.on_retry is not None:
            self.on_retry(error, seconds)


class Deadline:
    """A point in time `timeout` seconds from now (None: never)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or None without a deadline."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def capped(self, seconds: float) -> float:
        """`seconds`, shortened so as not to sleep past the deadline."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)


def watch_delay(
    policy: RetryPolicy, error: DtqClientError, attempt: int, deadline: Deadline
) -> float:
    """Seconds before a broken watch reopens; raises when it must not."""
    if deadline.expired():
        raise TimeoutError(f"the task did not finish within {deadline.timeout}s") from None
    delay = policy.delay(error, attempt, UNSENT)
    if delay is None:
        raise error from None
    return delay
