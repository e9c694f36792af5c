"""Helpers to drive tasks through the generated gRPC stubs."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

State = task_pb2.Task.State
TERMINAL = {
    State.Value("STATE_COMPLETED"),
    State.Value("STATE_CANCELLED"),
    State.Value("STATE_DEAD_LETTERED"),
}


def payload(**fields: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def submit(stub: task_service_pb2_grpc.TaskServiceStub, type_: str, **kw: Any) -> task_pb2.Task:
    body = kw.pop("payload", {})
    request = task_service_pb2.SubmitTaskRequest(type=type_, payload=payload(**body), **kw)
    return stub.SubmitTask(request, timeout=10).task


def get(stub: task_service_pb2_grpc.TaskServiceStub, task_id: str) -> task_pb2.Task:
    return stub.GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10).task


def wait_for(
    stub: task_service_pb2_grpc.TaskServiceStub,
    task_id: str,
    states: set[int] | None = None,
    timeout: float = 20.0,
) -> task_pb2.Task:
    """Poll GetTask until the task is in one of `states` (default: terminal)."""
    wanted = states or TERMINAL
    deadline = time.monotonic() + timeout
    while True:
        task = get(stub, task_id)
        if task.state in wanted:
            return task
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {State.Name(task.state)} after {timeout}s")
        time.sleep(0.05)


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the error"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


def result_of(task: task_pb2.Task) -> Any:
    return json.loads(json_format.MessageToJson(task.result)) if task.HasField("result") else None
