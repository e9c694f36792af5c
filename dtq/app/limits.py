"""Quotas and rate limits, enforced where work enters and where it leaves.

Submit rate (per tenant): a token bucket in Redis (take_tokens.lua), one call
per submission batch (concurrent batches share it), all or nothing: a batch of
n takes n tokens or none. Every server replica takes from the same bucket, so
the rate holds for the whole cluster. A tenant with no rate set costs no Redis
call at all. A bucket Redis lost comes back full: one extra burst at most.

Queued cap (per tenant: PENDING + SCHEDULED + FAILED awaiting a retry): each
server reads the tenant's count from PostgreSQL at most once every
`count_refresh` seconds (1 s) and adds what it accepted itself since; a submit
that would pass the cap is refused. Between reads no round trip is made. Error
bound: the count misses what *other* servers accepted since their last read,
so the cluster may overshoot the cap by at most what the other replicas accept
in one refresh interval (with a submit rate set as well: at most `rate` x the
interval + `burst`); tasks that finished meanwhile only make the count too high, so a
server may refuse for up to one interval after room was made. A counter kept
by the enqueue and lease scripts would be exact but would have to follow every
transition (schedule, retry, cancel, expiry, reconciliation) through Redis,
which loses data that PostgreSQL keeps; the count cannot drift.

Dispatch rate (per queue and task type): a token bucket per (queue, type) that
lease.lua takes from as it pops tasks; a type out of tokens is skipped, so
other types of the queue keep flowing, and the script says when the next
token comes: the dispatcher schedules a wake-up then (no polling).

Limits are read from PostgreSQL by every server every `refresh` seconds (2 s):
a change takes effect everywhere within that.

Redis unreachable: the submit rate fails open (`DTQ_RATE_LIMIT_FAILURE=open`,
the default: submissions go to PostgreSQL, the source of truth, and are
dispatched when Redis is back; refusing them would push the outage onto every
producer) or closed
(`closed`: UNAVAILABLE with RetryInfo, for operators who must never exceed a
downstream's rate). Dispatch needs Redis anyway: nothing is leased while it is
down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dtq import metrics
from dtq.domain.errors import DtqError
from dtq.domain.limits import (
    QUEUED_CAP,
    RATE_LIMITED,
    Share,
    TenantLimits,
    queued_cap,
    rate_limited,
)
from dtq.domain.tenants import split_tenant_queue
from dtq.ports import LimitStore, RateBuckets

log = logging.getLogger(__name__)
OPEN_LOG_EVERY = 10.0  # seconds between two `rate_limit_failed_open` lines


@dataclass
class LimitsCache:
    """What every server knows of the configured limits, re-read every `refresh` s."""

    store: LimitStore
    refresh: float = 2.0
    tenants: dict[str, TenantLimits] = field(default_factory=dict)
    rates: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    async def load(self) -> None:
        self.tenants = {t.tenant: t for t in await self.store.tenant_limits()}
        rates: dict[str, dict[str, tuple[float, int]]] = {}
        for r in await self.store.dispatch_rates():
            rates.setdefault(r.queue, {})[r.task_type] = (r.rate, r.burst)
        self.rates = rates

    def rates_of(self, queue: str) -> Mapping[str, tuple[float, int]]:
        return self.rates.get(queue, {})

    def share_of(self, queue: str) -> Share:
        """The running caps and key weights of a `tenant_queue` name's tenant."""
        return Share.of(self.tenants.get(split_tenant_queue(queue)[0]))

    async def run(self) -> None:
        """Re-read forever; a failed read keeps what was known."""
        while True:
            try:
                await self.load()
            except DtqError as error:
                log.warning("limits_read_failed", extra={"reason": error.reason})
            await asyncio.sleep(self.refresh)


@dataclass
class Quotas:
    """The submit checks: the tenant's queued cap, then its submit rate."""

    cache: LimitsCache
    buckets: RateBuckets
    fail_open: bool = True
    count_refresh: float = 1.0
    clock: Callable[[], float] = time.monotonic
    # tenant -> [read at, queued then + accepted here since]
    counts: dict[str, list[float]] = field(default_factory=dict)
    _open_logged: float = -OPEN_LOG_EVERY
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, tenant: str, n: int) -> None:
        """Raise RESOURCE_EXHAUSTED (RATE_LIMITED or QUEUED_CAP) when `n` more
        tasks of `tenant` would pass a limit."""
        limits = self.cache.tenants.get(tenant)
        if limits is None or n <= 0:
            return
        capped = limits.max_queued is not None
        if capped:
            await self._check_cap(limits, n)  # counts the n in: concurrent submits see them
        if limits.submit_rate is not None:
            try:
                await self._take(limits, n)
            except DtqError:
                if capped:
                    self.counts[tenant][1] -= n
                raise

    async def _check_cap(self, limits: TenantLimits, n: int) -> None:
        assert limits.max_queued is not None
        async with self._reading:  # one read per interval, however many submits wait
            now = self.clock()
            entry = self.counts.get(limits.tenant)
            if entry is None or now - entry[0] >= self.count_refresh:
                queued_now = await self.cache.store.count_queued(limits.tenant)
                entry = self.counts[limits.tenant] = [now, queued_now]
        queued = int(entry[1])
        if queued + n > limits.max_queued:
            self._count(limits.tenant, QUEUED_CAP)
            wait = max(entry[0] + self.count_refresh - now, 0.1)
            raise queued_cap(limits.tenant, limits.max_queued, queued, wait)
        entry[1] += n

    async def _take(self, limits: TenantLimits, n: int) -> None:
        assert limits.submit_rate is not None
        try:
            wait = await self.buckets.take(limits.tenant, n, limits.submit_rate, limits.burst)
        except DtqError as error:
            if not self.fail_open:
                raise DtqError.unavailable(
                    "redis",
                    "the submit rate limiter cannot reach Redis, and "
                    "DTQ_RATE_LIMIT_FAILURE=closed refuses submissions meanwhile",
                ) from error
            if self.clock() - self._open_logged >= OPEN_LOG_EVERY:
                self._open_logged = self.clock()
                log.warning("rate_limit_failed_open", extra={"reason": error.reason})
            return
        if wait > 0:
            self._count(limits.tenant, RATE_LIMITED)
            raise rate_limited(limits.tenant, limits.submit_rate, wait)

    @staticmethod
    def _count(tenant: str, reason: str) -> None:
        metrics.rate_limited.labels(metrics.tenant_label(tenant), reason.lower()).inc()
