"""Who may do what: roles, the callers they belong to, and the rule of each RPC.

A caller is a `Principal`: the subject of an API key or of a token, its role,
the queues it is limited to (none: every queue) and its tenant (`*`: the
operator scope, see `dtq.domain.tenants`). The API layer authenticates each call and
checks `allowed(role, method)`; a method with no rule is refused to everyone
but admins (fail closed: a new RPC must be given its rule here).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from dtq.domain import tenants
from dtq.domain.errors import Code, DtqError


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything
    PRODUCER = "producer"  # submit, read and cancel tasks
    WORKER = "worker"  # register, lease, report outcomes
    VIEWER = "viewer"  # read-only


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str  # "key:<id>", or the token's subject claim
    role: Role
    queues: frozenset[str] = frozenset()  # empty: every queue
    tenant: str = tenants.DEFAULT  # `*`: every tenant (the operator scope)

    def may_use(self, queue: str) -> bool:
        return not self.queues or queue in self.queues

    @property
    def every_tenant(self) -> bool:
        return self.tenant == tenants.ALL

    @property
    def home(self) -> str:
        """The tenant this caller acts in: its own; `default` for the operator scope."""
        return tenants.DEFAULT if self.every_tenant else self.tenant

    @property
    def view(self) -> str | None:
        """The tenant whose things this caller sees; None: every tenant."""
        return None if self.every_tenant else self.tenant

    def sees(self, tenant: str) -> bool:
        return self.every_tenant or tenant == self.tenant

    def acting_in(self, wanted: str | None) -> Principal:
        """This caller for a call that picked tenant `wanted` (`x-dtq-tenant`):
        the operator scope acts in that one tenant; any other caller may only
        name its own (another is refused: TENANT_NOT_ALLOWED)."""
        if not wanted or wanted == self.tenant:
            return self
        name = tenants.tenant_name(wanted, "x-dtq-tenant")
        if not self.every_tenant:
            raise tenants.not_allowed(self.tenant, name)
        return replace(self, tenant=name)


# Every caller when authentication is off: the operator scope, acting in
# `default` unless a call picks another tenant.
ANONYMOUS = Principal("anonymous", Role.ADMIN, tenant=tenants.ALL)

_A, _P, _W, _V = Role.ADMIN, Role.PRODUCER, Role.WORKER, Role.VIEWER
_READ = frozenset({_A, _P, _V})
_SUBMIT = frozenset({_A, _P})
_WORK = frozenset({_A, _W})
_OBSERVE = frozenset({_A, _V})
_ADMIN = frozenset({_A})

# Full method name without the package: "Service/Method".
RULES: dict[str, frozenset[Role]] = {
    "TaskService/SubmitTask": _SUBMIT,
    "TaskService/BatchSubmitTasks": _SUBMIT,
    "TaskService/SubmitGroup": _SUBMIT,
    "TaskService/GetTask": _READ,
    "TaskService/ListTasks": _READ,
    "TaskService/WatchTask": _READ,
    "TaskService/CancelTask": _SUBMIT,
    "TaskService/RetryTask": _ADMIN,
    "WorkerService/RegisterWorker": _WORK,
    "WorkerService/LeaseTasks": _WORK,
    "WorkerService/CompleteTask": _WORK,
    "WorkerService/FailTask": _WORK,
    "WorkerService/ExtendLease": _WORK,
    # A worker's handler submitting children of the task it runs (its lease).
    "WorkerService/SubmitChildTasks": _WORK,
    "AdminService/GetQueueStats": _OBSERVE,
    "AdminService/ListWorkers": _OBSERVE,
    "AdminService/GetSystemHealth": _OBSERVE,
    "AdminService/PauseQueue": _ADMIN,
    "AdminService/ResumeQueue": _ADMIN,
    "AdminService/DeleteQueue": _ADMIN,
    "AdminService/RequeueDeadLetters": _ADMIN,
    "AdminService/PurgeDeadLetters": _ADMIN,
    "AdminService/ListAuditEvents": _ADMIN,
    "AdminService/GetTenantLimits": _ADMIN,
    "AdminService/ListTenantLimits": _ADMIN,
    "AdminService/SetTenantLimits": _ADMIN,
    "AdminService/SetDispatchRate": _ADMIN,
    "AdminService/ListDispatchRates": _ADMIN,
    "AdminService/DeleteDispatchRate": _ADMIN,
    # Operator-scope admins only: see `operator_only`.
    "AdminService/CreateTenant": _ADMIN,
    "AdminService/ListTenants": _ADMIN,
    "AdminService/CreateSchedule": _ADMIN,
    "AdminService/GetSchedule": _OBSERVE,
    "AdminService/ListSchedules": _OBSERVE,
    "AdminService/UpdateSchedule": _ADMIN,
    "AdminService/DeleteSchedule": _ADMIN,
    "AdminService/PauseSchedule": _ADMIN,
    "AdminService/ResumeSchedule": _ADMIN,
    "AdminService/TriggerSchedule": _ADMIN,
}

# Methods only the operator scope (`*`) may call, whatever its role allows.
# A tenant's quotas are set by the operator, not by the tenant's own admins.
OPERATOR_ONLY = frozenset(
    {
        "AdminService/CreateTenant",
        "AdminService/ListTenants",
        "AdminService/GetTenantLimits",
        "AdminService/ListTenantLimits",
        "AdminService/SetTenantLimits",
    }
)


def allowed(role: Role, method: str) -> bool:
    """May `role` call `method` ("Service/Method")?"""
    return role in RULES.get(method, _ADMIN)


def permits(principal: Principal, method: str) -> bool:
    """May this caller call `method`: its role, and the operator scope where needed."""
    if method in OPERATOR_ONLY and not principal.every_tenant:
        return False
    return allowed(principal.role, method)


def unauthenticated(reason: str, message: str) -> DtqError:
    return DtqError(Code.UNAUTHENTICATED, reason, message)


def denied(principal: Principal, method: str) -> DtqError:
    if method in OPERATOR_ONLY and allowed(principal.role, method):
        return DtqError(
            Code.PERMISSION_DENIED,
            "OPERATOR_ONLY",
            f"{method} is for admins of every tenant (an API key of tenant '*')",
        )
    return DtqError(
        Code.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
        f"role {principal.role.value} may not call {method}",
    )


def queue_denied(principal: Principal, queue: str) -> DtqError:
    return DtqError(
        Code.PERMISSION_DENIED,
        "QUEUE_NOT_ALLOWED",
        f"this credential is limited to queues {', '.join(sorted(principal.queues))}, "
        f"not {queue!r}",
    )


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: everything but its secret (only a digest of that is kept)."""

    id: str
    name: str
    role: Role
    queues: frozenset[str]
    tenant: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def principal(self) -> Principal:
        return Principal(f"key:{self.id}", self.role, self.queues, self.tenant)

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def queue_required(principal: Principal) -> DtqError:
    return DtqError(
        Code.PERMISSION_DENIED,
        "QUEUE_NOT_ALLOWED",
        f"this credential is limited to queues {', '.join(sorted(principal.queues))}: "
        f"name one (queue)",
    )
