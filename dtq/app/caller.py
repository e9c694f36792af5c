"""The caller of the call being served, for the use cases that check queues
and tenants.

Set by the API layer around each call (`dtq.api.auth`); `ANONYMOUS` (an
admin of every tenant) where nobody set it: authentication off, or the
manager's own work.
"""

from __future__ import annotations

from contextvars import ContextVar

from dtq.domain.auth import ANONYMOUS, Principal, queue_denied
from dtq.domain.tenants import split_tenant_queue

CALLER: ContextVar[Principal] = ContextVar("dtq_caller", default=ANONYMOUS)


def current() -> Principal:
    return CALLER.get()


def check_queue(queue: str) -> None:
    """PERMISSION_DENIED unless the caller may use `queue`."""
    principal = CALLER.get()
    if not principal.may_use(queue):
        raise queue_denied(principal, queue)


def may_see(tenant: str, queue: str) -> bool:
    """May the caller see the things of `tenant`'s `queue`?"""
    principal = CALLER.get()
    return principal.sees(tenant) and principal.may_use(queue)


def visible_tenant_queues(names: set[str]) -> set[str]:
    """The `tenant_queue` names of `names` the caller may see."""
    return {n for n in names if may_see(*split_tenant_queue(n))}


def sees_everything() -> bool:
    """Every tenant and every queue: nothing to check."""
    principal = CALLER.get()
    return principal.every_tenant and not principal.queues
