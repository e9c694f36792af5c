"""Tenants: who owns a task, a queue, a worker, an API key, an audit event.

Every caller acts in one tenant (its key's or token's). A tenant's queue
`emails` is a different queue from another tenant's `emails`: the two are told
apart everywhere below the API by `tenant_queue(tenant, queue)`, the queue's
name in the default tenant and `tenant/queue` in any other (a queue name holds
no `/`, so the two never collide, and the default tenant keeps the names and
Redis keys it had before tenants existed).

The operator scope `*` is an admin of every tenant: it sees all of them, and
acts in the one it picks for a call (`x-dtq-tenant`), else in `default`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dtq.domain.errors import Code, DtqError

DEFAULT = "default"
ALL = "*"  # the operator scope
SEP = "/"
MAX_WEIGHT = 1000
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A stored tenant. `weight`: its share when tenants share workers (fair
    dispatch; stored now, used later)."""

    name: str
    weight: int = 1
    created_at: float = 0.0


def tenant_queue(tenant: str, queue: str) -> str:
    """The name of `tenant`'s `queue` below the API (see the module doc)."""
    return queue if tenant == DEFAULT else f"{tenant}{SEP}{queue}"


def split_tenant_queue(name: str) -> tuple[str, str]:
    """(tenant, queue) of a `tenant_queue` name."""
    tenant, sep, queue = name.partition(SEP)
    return (tenant, queue) if sep else (DEFAULT, name)


def tenant_name(value: str, field_path: str = "tenant", scope: bool = False) -> str:
    """A valid tenant name; `*` too where an operator scope is allowed."""
    if scope and value == ALL:
        return value
    if not _NAME.match(value):
        raise DtqError.invalid(
            field_path,
            "must be 1-63 characters: a lowercase letter or digit, then lowercase letters, "
            "digits, '_' or '-'" + (", or '*' (every tenant)" if scope else ""),
        )
    return value


def weight(value: int, field_path: str = "weight") -> int:
    if not 1 <= value <= MAX_WEIGHT:
        raise DtqError.invalid(field_path, f"must be 1 to {MAX_WEIGHT}")
    return value


def not_found(name: str) -> DtqError:
    return DtqError(
        Code.NOT_FOUND,
        "TENANT_NOT_FOUND",
        f"tenant {name!r} does not exist: an operator creates it (dtq tenant create)",
    )


def exists_already(name: str) -> DtqError:
    return DtqError(Code.ALREADY_EXISTS, "TENANT_EXISTS", f"tenant {name!r} exists")


def not_allowed(own: str, wanted: str) -> DtqError:
    return DtqError(
        Code.PERMISSION_DENIED,
        "TENANT_NOT_ALLOWED",
        f"this credential belongs to tenant {own!r}: it may not act in {wanted!r}",
    )
