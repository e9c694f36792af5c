"""Forged and stale lease tokens: CompleteTask, FailTask and ExtendLease with a
token that is not the current lease's get FAILED_PRECONDITION (STALE_LEASE),
and nothing about the task changes."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from dtq.v1 import task_pb2, worker_service_pb2, worker_service_pb2_grpc
from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster, request
from tests.support.procs import wait_until
from tests.support.tasks import error_reason

pytestmark = pytest.mark.faults


def row(cluster: Cluster, task_id: str) -> tuple[Any, ...]:
    found = cluster.backends.sql(
        "SELECT state, attempts, lease_token, result, finished_at, error_message, worker_id "
        "FROM tasks WHERE id = %s",
        (task_id,),
    )
    return tuple(found[0])


def token_of(cluster: Cluster, task_id: str) -> str:
    return str(row(cluster, task_id)[2])


def calls(
    stub: worker_service_pb2_grpc.WorkerServiceStub, task_id: str, token: str
) -> list[Callable[[], object]]:
    done = struct_pb2.Value(string_value="forged")
    error = task_pb2.TaskError(message="forged", type="Forged")
    return [
        lambda: stub.CompleteTask(
            worker_service_pb2.CompleteTaskRequest(task_id=task_id, lease_token=token, result=done),
            timeout=10,
        ),
        lambda: stub.FailTask(
            worker_service_pb2.FailTaskRequest(task_id=task_id, lease_token=token, error=error),
            timeout=10,
        ),
        lambda: stub.ExtendLease(
            worker_service_pb2.ExtendLeaseRequest(task_id=task_id, lease_token=token), timeout=10
        ),
    ]


def refused(cluster: Cluster, stub: Any, task_id: str, token: str) -> int:
    """Each call with `token` is refused and leaves the task as it was."""
    count = 0
    for call in calls(stub, task_id, token):
        before = row(cluster, task_id)
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert error_reason(caught.value) == "STALE_LEASE"
        assert row(cluster, task_id) == before, "a refused call changed the task"
        count += 1
    return count


def test_forged_and_stale_tokens_change_nothing(cluster: Cluster) -> None:
    cluster.start(workers=1, concurrency=2)
    running = cluster.submit([request({"sleep": 2.0}) for _ in range(2)])
    stub = worker_service_pb2_grpc.WorkerServiceStub(cluster.channel())
    wait_until(lambda: set(cluster.states(running).values()) == {"running"}, 20, "running")
    first, second = running
    current = {t: token_of(cluster, t) for t in running}
    n = refused(cluster, stub, first, secrets.token_hex(16))  # forged
    n += refused(cluster, stub, first, current[second])  # another task's current token
    verdict = cluster.verify("stale/forged lease tokens", running, timeout=20)
    n += refused(cluster, stub, first, current[first])  # its own token, once finished
    verdict.notes = f"{n} forged or stale calls refused, task unchanged"
    assert_contract(verdict)
    assert all(row(cluster, t)[1] == 1 for t in running), "a refused call cost an attempt"
