"""Quotas and rate limits: what is configured, how a rate is written, and the
errors a caller over a limit gets.

Per tenant: a submit rate (a token bucket: `rate` tasks per second refill,
`burst` at most in the bucket), a cap on queued tasks (PENDING, SCHEDULED
and FAILED-awaiting-retry), caps on running tasks (in each of its queues, and
per fairness key there) and the weights of its fairness keys in fair dispatch.
Per (queue, task type): a dispatch rate, leases granted per second across
every server and worker. Over a limit: RESOURCE_EXHAUSTED with a RetryInfo of when to try again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dtq.domain.errors import Code, DtqError
from dtq.domain.tenants import MAX_WEIGHT

RATE_LIMITED = "RATE_LIMITED"
QUEUED_CAP = "QUEUED_CAP"
MAX_RATE = 1_000_000.0  # per second
MAX_BURST = 1_000_000
MAX_QUEUED = 10**12
MAX_RUNNING = 1_000_000
MAX_KEY_WEIGHTS = 100  # weighted fairness keys per tenant: each is an argument of every lease
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*")


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's quotas; None: no limit."""

    tenant: str
    submit_rate: float | None = None  # tasks per second
    submit_burst: int | None = None  # None: one second's worth (at least 1)
    max_queued: int | None = None
    updated_at: float = 0.0
    # Most RUNNING tasks of the tenant in one queue, and of one fairness key
    # there (a queue lives in one Redis slot, which the lease script counts in).
    max_running: int | None = None
    key_max_running: int | None = None
    # Fairness key -> weight (1..MAX_WEIGHT; a key not named weighs 1).
    key_weights: Mapping[str, int] = field(default_factory=dict)

    @property
    def burst(self) -> int:
        return self.submit_burst or default_burst(self.submit_rate or 0.0)


@dataclass(frozen=True, slots=True)
class DispatchRate:
    """Leases of `task_type` in `queue` granted per second, `burst` at once."""

    queue: str
    task_type: str
    rate: float
    burst: int
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Share:
    """What the lease script enforces in one of a tenant's queues; 0: no cap."""

    max_running: int = 0
    key_max_running: int = 0
    weights: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, limits: TenantLimits | None) -> Share:
        if limits is None:
            return NO_SHARE
        weights = tuple(sorted((k, w) for k, w in limits.key_weights.items() if w != 1))
        return cls(limits.max_running or 0, limits.key_max_running or 0, weights)


NO_SHARE = Share()


def default_burst(rate: float) -> int:
    """One second's worth, at least one."""
    return max(1, math.ceil(rate))


def parse_rate(text: str) -> float:
    """`10/s`, `600/m`, `2.5/h` or a bare number (per second) -> per second.
    Raises ValueError."""
    match = _RATE.fullmatch(text.lower())
    if not match or (match[2] is not None and match[2] not in _UNITS):
        raise ValueError(f"{text!r} is not a rate: write N/s, N/m or N/h (e.g. 10/s)")
    rate = float(match[1]) / _UNITS[match[2] or "s"]
    if rate <= 0:
        raise ValueError(f"{text!r}: a rate must be above 0")
    return rate


def check_rate(rate: float, burst: int | None, field_path: str = "rate") -> None:
    """INVALID_ARGUMENT unless 0 < rate <= MAX_RATE and 1 <= burst <= MAX_BURST."""
    if not (0 < rate <= MAX_RATE) or math.isnan(rate):
        raise DtqError.invalid(field_path, f"must be above 0 and at most {MAX_RATE:g} per second")
    if burst is not None and not (1 <= burst <= MAX_BURST):
        raise DtqError.invalid("burst", f"must be 1 to {MAX_BURST}")


def check_tenant_limits(limits: TenantLimits) -> None:
    if limits.submit_rate is not None:
        check_rate(limits.submit_rate, None, "submit_rate")
    if limits.submit_burst is not None:
        if limits.submit_rate is None:
            raise DtqError.invalid("submit_burst", "needs submit_rate")
        if not (1 <= limits.submit_burst <= MAX_BURST):
            raise DtqError.invalid("submit_burst", f"must be 1 to {MAX_BURST}")
    if limits.max_queued is not None and not (0 <= limits.max_queued <= MAX_QUEUED):
        raise DtqError.invalid("max_queued", f"must be 0 to {MAX_QUEUED}")
    for name in ("max_running", "key_max_running"):
        cap = getattr(limits, name)
        if cap is not None and not (1 <= cap <= MAX_RUNNING):
            raise DtqError.invalid(name, f"must be 1 to {MAX_RUNNING}")
    if len(limits.key_weights) > MAX_KEY_WEIGHTS:
        raise DtqError.invalid("key_weights", f"at most {MAX_KEY_WEIGHTS} keys")
    for key, weight in limits.key_weights.items():
        if not 1 <= weight <= MAX_WEIGHT:
            raise DtqError.invalid(f"key_weights[{key!r}]", f"must be 1 to {MAX_WEIGHT}")


def rate_limited(tenant: str, rate: float, wait: float) -> DtqError:
    return DtqError(
        Code.RESOURCE_EXHAUSTED,
        RATE_LIMITED,
        f"tenant {tenant!r} may submit {rate:g} tasks per second: retry in {wait:.3g}s",
        retry_after=wait,
    )


def queued_cap(tenant: str, cap: int, queued: int, wait: float) -> DtqError:
    return DtqError(
        Code.RESOURCE_EXHAUSTED,
        QUEUED_CAP,
        f"tenant {tenant!r} has {queued} queued tasks, the most allowed is {cap}: "
        f"retry once some have run",
        retry_after=wait,
    )
