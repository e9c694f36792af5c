"""Every attempt of a task, through real processes: a task that fails twice and
then succeeds shows its two failed attempts and the final one, over gRPC
(GetTask) and REST (Envoy's transcoding); ListTasks finds it by time range and
by idempotency key."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.e2e.test_rest import Rest
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import Proc
from tests.support.tasks import State, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_WORKER_RETRY_BACKOFF_BASE": "2", "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2"}


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as running:
        yield running


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Iterator[Proc]:
    yield start_worker("--concurrency", "2")


def test_two_failures_then_success(tasks, worker: Proc, envoy: Envoy) -> None:
    started = time.time()
    task = submit(tasks, "test_task", payload={"fail_times": 2}, idempotency_key="attempts-1")
    done = wait_for(tasks, task.id)
    assert done.state == State.Value("STATE_COMPLETED")
    history = done.attempt_history
    assert [a.attempt for a in history] == [1, 2, 3]
    assert [a.error.type for a in history] == ["RuntimeError", "RuntimeError", ""]
    assert "Traceback" in history[0].error.traceback
    for a in history:
        assert a.worker_id == done.worker_id
        assert started - 1 < a.started_at.ToSeconds() <= a.ended_at.ToSeconds() < time.time() + 1
    assert history[2].ended_at == done.finished_at
    basic = tasks.GetTask(
        task_service_pb2.GetTaskRequest(id=task.id, view="TASK_VIEW_BASIC")  # type: ignore[arg-type]
    ).task
    assert not basic.attempt_history

    rest = Rest(envoy.port)
    body = rest.ok("GET", f"/api/v1/tasks/{task.id}")["task"]
    over_rest = body["attempt_history"]
    assert [a["attempt"] for a in over_rest] == [1, 2, 3]
    assert [a.get("error", {}).get("type") for a in over_rest] == ["RuntimeError"] * 2 + [None]
    assert over_rest[0]["worker_id"] == done.worker_id
    assert over_rest[2]["ended_at"].endswith("Z")

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
    found = rest.ok("GET", "/api/v1/tasks", created_after=since, idempotency_key="attempts-1")
    assert [t["id"] for t in found["tasks"]] == [task.id]
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    assert rest.ok("GET", "/api/v1/tasks", created_after=later)["tasks"] == []
    assert rest.ok("GET", "/api/v1/tasks", created_before=since)["tasks"] == []
