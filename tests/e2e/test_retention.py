"""Retention in a real `dtq manager`: with a tiny `DTQ_RETENTION_COMPLETED` it
deletes completed and cancelled tasks soon after they finish, and keeps dead
letters and unfinished tasks."""

from __future__ import annotations

import time

import grpc
import pytest

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.support.procs import Proc, wait_until
from tests.support.stub_worker import completed, dead_letter, submit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
AGE = 1.0  # seconds a finished task is kept


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """The module's server and manager share these settings."""
    return {"DTQ_RETENTION_COMPLETED": str(AGE), "DTQ_RETENTION_INTERVAL": "0.2"}


def exists(channel: grpc.Channel, task_id: str) -> bool:
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    try:
        stub.GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return False
    return True


def test_old_completed_and_cancelled_tasks_go_dead_letters_stay(
    channel: grpc.Channel, manager: Proc
) -> None:
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    done = completed(channel, "report")
    assert exists(channel, done)  # not purged before its age
    cancelled = submit(channel, "report", "other").id
    stub.CancelTask(task_service_pb2.CancelTaskRequest(id=cancelled), timeout=10)
    dead = dead_letter(channel, "report").id
    pending = submit(channel, "later", "default").id
    wait_until(lambda: not exists(channel, done) and not exists(channel, cancelled), 15, "purge")
    time.sleep(AGE + 0.5)  # several more passes, the dead letter now older than AGE
    assert exists(channel, dead) and exists(channel, pending)
    assert "tasks_purged" in manager.output()
