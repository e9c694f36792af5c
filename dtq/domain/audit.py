"""The audit log: who changed what on someone else's behalf, and how it ended.

Recorded for the calls in `AUDITED` (refused ones too) and for the `dtq
apikey` commands; kept in PostgreSQL past task retention.
"""

from __future__ import annotations

from dataclasses import dataclass

# Calls that change state on someone else's behalf ("Service/Method").
AUDITED = frozenset(
    {
        "TaskService/CancelTask",
        "TaskService/RetryTask",
        "AdminService/PauseQueue",
        "AdminService/ResumeQueue",
        "AdminService/DeleteQueue",
        "AdminService/RequeueDeadLetters",
        "AdminService/PurgeDeadLetters",
        "AdminService/SetTenantLimits",
        "AdminService/SetDispatchRate",
        "AdminService/DeleteDispatchRate",
        "AdminService/CreateTenant",
        "AdminService/CreateSchedule",
        "AdminService/UpdateSchedule",
        "AdminService/DeleteSchedule",
        "AdminService/PauseSchedule",
        "AdminService/ResumeSchedule",
        "AdminService/TriggerSchedule",
    }
)
MAX_DETAIL = 2048  # characters of JSON kept per event


@dataclass(frozen=True)
class AuditEvent:
    at: float  # Unix seconds
    actor: str  # a Principal's subject, `cli:<user>@<host>`, or `anonymous`
    role: str  # empty when not authenticated
    action: str  # "Service/Method" or a CLI action ("apikey/create")
    target: str  # task id, queue or key id
    outcome: str  # a gRPC status code name: "OK", "PERMISSION_DENIED", ...
    detail: str = "{}"  # JSON, at most MAX_DETAIL characters
    id: int = 0  # given by the log
    tenant: str = "default"  # the tenant the caller acted in
