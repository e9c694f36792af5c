"""Use cases of the operator's limits: tenant quotas (operator scope only) and
dispatch rates (admins, for a queue of the tenant they act in: stored under the
queue's `tenant_queue` name, the one the lease path sees). Stored in
PostgreSQL; this server applies a change at once, the others at their next
read (LimitsCache.refresh)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dtq.app import caller
from dtq.app.limits import LimitsCache
from dtq.domain import tenants, validation
from dtq.domain.errors import DtqError
from dtq.domain.limits import (
    DispatchRate,
    TenantLimits,
    check_rate,
    check_tenant_limits,
    default_burst,
)
from dtq.ports import LimitStore


def tenant_name(value: str) -> str:
    if not value:
        raise DtqError.invalid("tenant", "is required")
    return tenants.tenant_name(value)


def _here(queue: str) -> str:
    """`queue` of the tenant the caller acts in, as the lease path names it."""
    return tenants.tenant_queue(caller.current().home, queue)


def _shown(rate: DispatchRate) -> DispatchRate:
    return replace(rate, queue=tenants.split_tenant_queue(rate.queue)[1])


@dataclass
class LimitSettings:
    store: LimitStore
    cache: LimitsCache

    async def tenant_limits(self, tenant: str) -> TenantLimits:
        """A tenant's limits; one with none set has an empty record."""
        tenant = tenant_name(tenant)
        known = {t.tenant: t for t in await self.store.tenant_limits()}
        return known.get(tenant, TenantLimits(tenant))

    async def all_tenant_limits(self) -> list[TenantLimits]:
        return await self.store.tenant_limits()

    async def set_tenant_limits(self, limits: TenantLimits) -> TenantLimits:
        limits = replace(limits, tenant=tenant_name(limits.tenant))
        check_tenant_limits(limits)
        stored = await self.store.set_tenant_limits(limits)
        self.cache.tenants[stored.tenant] = stored
        return stored

    async def set_dispatch_rate(
        self, queue: str, task_type: str, rate: float, burst: int | None
    ) -> DispatchRate:
        queue = _here(validation.queue_name(queue))
        task_type = validation.task_type(task_type, "task_type")
        check_rate(rate, burst)
        wanted = DispatchRate(queue, task_type, rate, burst or default_burst(rate))
        stored = await self.store.set_dispatch_rate(wanted)
        self.cache.rates.setdefault(queue, {})[task_type] = (stored.rate, stored.burst)
        return _shown(stored)

    async def dispatch_rates(self, queue: str) -> list[DispatchRate]:
        """The rates of the caller's tenant (of its `queue` when given)."""
        home = caller.current().home
        mine = [
            _shown(r)
            for r in await self.store.dispatch_rates()
            if tenants.split_tenant_queue(r.queue)[0] == home
        ]
        return [r for r in mine if not queue or r.queue == queue]

    async def delete_dispatch_rate(self, queue: str, task_type: str) -> None:
        queue = _here(validation.queue_name(queue))
        task_type = validation.task_type(task_type, "task_type")
        if not await self.store.delete_dispatch_rate(queue, task_type):
            raise DtqError.not_found("dispatch rate", f"{queue}/{task_type}")
        self.cache.rates.get(queue, {}).pop(task_type, None)
