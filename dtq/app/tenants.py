"""Use cases of tenants: create, list, and the check that one exists.

`default` always exists (the migration creates it). Any other tenant is
created by an operator (`dtq tenant create`, AdminService.CreateTenant); a
submission into one that does not exist is refused with NOT_FOUND
(TENANT_NOT_FOUND), so a typo in a key's tenant cannot silently start a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtq.domain import paging, tenants
from dtq.domain.errors import DtqError
from dtq.domain.tenants import Tenant
from dtq.ports import Clock, Tenants

MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass
class TenantBook:
    """Which tenants exist: creating and listing them (the operator's calls),
    and the check a submission makes that its tenant exists."""

    store: Tenants
    clock: Clock
    # Names known to exist: tenants are never deleted, so a name found once stays.
    known: set[str] = field(default_factory=lambda: {tenants.DEFAULT})

    async def require(self, name: str) -> None:
        """NOT_FOUND (TENANT_NOT_FOUND) unless tenant `name` exists."""
        if name in self.known:
            return
        if await self.store.get(name) is None:
            raise tenants.not_found(name)
        self.known.add(name)

    async def create(self, name: str, weight: int = 1) -> Tenant:
        tenant = Tenant(
            tenants.tenant_name(name, "name"),
            tenants.weight(weight or 1),
            self.clock.now(),
        )
        if not await self.store.add(tenant):
            raise tenants.exists_already(name)
        self.known.add(tenant.name)
        return tenant

    async def page(self, page_size: int, token: str) -> tuple[list[Tenant], str]:
        """Tenants by name, `page_size` (0: 100) at a time."""
        if not 0 <= page_size <= MAX_PAGE:
            raise DtqError.invalid("page_size", f"must be 0 to {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE
        fp = paging.fingerprint("tenants")
        offset = paging.decode_offset(token, fp)
        every = await self.store.list_all()
        more = offset + size < len(every)
        return every[offset : offset + size], paging.encode(str(offset + size), fp) if more else ""
