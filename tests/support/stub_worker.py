"""The test plays a worker through the generated stubs (register, open a lease
stream, report an outcome), so tasks reach COMPLETED or DEAD_LETTERED without a
`dtq worker` process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import struct_pb2

from dtq.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

pb = worker_service_pb2
TRACEBACK = 'Traceback (most recent call last):\n  File "handler.py", line 7\nValueError: boom\n'


def lease_one(channel: grpc.Channel, task_type: str, queue: str = "default") -> pb.Lease:
    """Register, open a stream for one task of `task_type` in `queue`, take one
    lease, hang up. The lease stays valid after the stream closes (until it expires)."""
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    worker = stub.RegisterWorker(
        pb.RegisterWorkerRequest(hostname="stub", pid=1, task_types=[task_type], concurrency=1),
        timeout=10,
    )
    stop = threading.Event()
    opening = pb.StreamOpen(
        worker_id=worker.worker_id, queues=[queue], task_types=[task_type], capacity=1
    )

    def requests() -> Iterator[pb.LeaseTasksRequest]:
        yield pb.LeaseTasksRequest(open=opening)
        stop.wait(20)

    stream = stub.LeaseTasks(requests(), timeout=20)
    try:
        for reply in stream:
            if reply.leases:
                return reply.leases[0]
    finally:
        stop.set()
        stream.cancel()
    raise AssertionError("the stream ended without a lease")


def submit(channel: grpc.Channel, task_type: str, queue: str = "", **payload: Any) -> task_pb2.Task:
    body = struct_pb2.Struct()
    body.update(payload)
    request = task_service_pb2.SubmitTaskRequest(type=task_type, queue=queue, payload=body)
    return task_service_pb2_grpc.TaskServiceStub(channel).SubmitTask(request, timeout=10).task


def dead_letter(
    channel: grpc.Channel, task_type: str = "report", queue: str = "default", **payload: Any
) -> task_pb2.Task:
    """A new task, failed on its first attempt with a permanent error: DEAD_LETTERED."""
    submit(channel, task_type, queue, **payload)
    lease = lease_one(channel, task_type, queue)
    error = task_pb2.TaskError(
        message="boom", type="ValueError", traceback=TRACEBACK, permanent=True
    )
    request = pb.FailTaskRequest(task_id=lease.task.id, lease_token=lease.lease_token, error=error)
    task = worker_service_pb2_grpc.WorkerServiceStub(channel).FailTask(request, timeout=10).task
    assert task.state == task_pb2.Task.State.STATE_DEAD_LETTERED, task
    return task


def completed(channel: grpc.Channel, task_type: str = "report", queue: str = "default") -> str:
    """A new task, completed on its first attempt; returns its id."""
    submit(channel, task_type, queue)
    lease = lease_one(channel, task_type, queue)
    request = pb.CompleteTaskRequest(
        task_id=lease.task.id,
        lease_token=lease.lease_token,
        result=struct_pb2.Value(string_value="done"),
    )
    worker_service_pb2_grpc.WorkerServiceStub(channel).CompleteTask(request, timeout=10)
    return lease.task.id
