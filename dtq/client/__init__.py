"""The Python client of dtq: submit tasks, wait for results, manage queues.

    from dtq import Client

    with Client("127.0.0.1:50051") as client:
        handle = client.submit("email_sending", {"to": "a@example.com"}, priority="high")
        print(handle.result(timeout=30))

`AsyncClient` offers the same calls for asyncio code.
"""

from dtq.client.aio import AsyncClient
from dtq.client.channels import ChannelConfig
from dtq.client.coalesce import Coalescing
from dtq.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DtqClientError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TaskCancelled,
    TaskFailed,
    Unauthenticated,
    Unavailable,
)
from dtq.client.handles import AsyncTaskHandle, Group, TaskHandle
from dtq.client.models import QueueStats, TaskErrorInfo, TaskInfo, TaskState
from dtq.client.requests import Submission, SubmitOptions
from dtq.client.retry import RetryPolicy
from dtq.client.sync import Client

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncTaskHandle",
    "ChannelConfig",
    "Client",
    "Coalescing",
    "DeadlineExceeded",
    "DtqClientError",
    "FailedPrecondition",
    "FieldViolation",
    "Group",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QueueStats",
    "ResourceExhausted",
    "RetryPolicy",
    "Submission",
    "SubmitOptions",
    "TaskCancelled",
    "TaskErrorInfo",
    "TaskFailed",
    "TaskHandle",
    "TaskInfo",
    "TaskState",
    "Unauthenticated",
    "Unavailable",
]
