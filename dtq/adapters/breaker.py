"""Circuit breakers: when PostgreSQL or Redis is down, fail fast instead of
making every call wait for a timeout, and find out by itself when it is back.

closed --(`threshold` failures in a row)--> open --(`cooldown` s)--> half-open
half-open: one probe call goes through; success closes, failure re-opens.
While open, calls raise UNAVAILABLE at once with a RetryInfo of the time left.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from dtq import metrics
from dtq.domain.errors import DtqError

log = logging.getLogger(__name__)


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Thread-safe: PostgreSQL calls run in a thread pool."""

    def __init__(
        self,
        dependency: str,
        threshold: int = 3,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        metrics.breaker_state.labels(dependency).set(State.CLOSED)

    @property
    def state(self) -> State:
        return self._state

    def before(self) -> None:
        """Raise UNAVAILABLE when the call must not go through."""
        with self._lock:
            if self._state == State.CLOSED:
                return
            left = self._opened_at + self.cooldown - self._clock()
            if self._state == State.OPEN and left <= 0:
                self._set(State.HALF_OPEN)
            if self._state == State.HALF_OPEN and not self._probing:
                self._probing = True
                return
        raise DtqError.unavailable(
            self.dependency,
            f"{self.dependency} is unreachable (circuit open); retry shortly",
            retry_after=max(left, 0.1),
        )

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != State.CLOSED:
                self._set(State.CLOSED)
                log.info("circuit_closed", extra={"dependency": self.dependency})

    def release(self) -> None:
        """The call ended for a reason that says nothing about the dependency."""
        with self._lock:
            self._probing = False

    def failure(self) -> None:
        metrics.dependency_errors.labels(self.dependency).inc()
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state == State.HALF_OPEN or self._failures >= self.threshold:
                if self._state != State.OPEN:
                    log.warning("circuit_opened", extra={"dependency": self.dependency})
                self._set(State.OPEN)
                self._opened_at = self._clock()

    def _set(self, state: State) -> None:
        self._state = state
        metrics.breaker_state.labels(self.dependency).set(state)
