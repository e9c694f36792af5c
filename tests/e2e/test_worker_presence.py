"""`ListWorkers` (and `dtq worker list`) show what the server holding a worker's
stream knows now: BUSY is the leases the worker holds, LAST SEEN its last
heartbeat or stream message, also while it holds nothing."""

from __future__ import annotations

import grpc
import pytest

from dtq.v1 import admin_service_pb2, admin_service_pb2_grpc, task_service_pb2_grpc, worker_pb2
from tests.conftest import WorkerFactory
from tests.support.procs import wait_until
from tests.support.tasks import State, get, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
LEASE = 3  # seconds: workers heartbeat every second
TASK_SECONDS = 3.0


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_LEASE_DURATION": str(LEASE)}


def the_worker(channel: grpc.Channel) -> worker_pb2.Worker:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    (worker,) = stub.ListWorkers(admin_service_pb2.ListWorkersRequest(), timeout=10).workers
    return worker


def seconds(ts: object) -> float:
    return float(ts.seconds + ts.nanos / 1e9)  # type: ignore[attr-defined]


def test_last_seen_advances_while_the_worker_is_idle(
    channel: grpc.Channel, start_worker: WorkerFactory
) -> None:
    start_worker()
    registered = seconds(the_worker(channel).registered_at)
    wait_until(
        lambda: seconds(the_worker(channel).last_seen_at) > registered + 2.5,
        10,
        "last seen 2.5 s past registration, from heartbeats of an idle worker",
    )
    assert the_worker(channel).active_tasks == 0


def test_busy_counts_the_lease_while_the_task_runs(
    channel: grpc.Channel, start_worker: WorkerFactory
) -> None:
    start_worker()
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    task = submit(tasks, "test_task", payload={"sleep_duration": TASK_SECONDS})
    wait_until(lambda: the_worker(channel).active_tasks == 1, TASK_SECONDS, "BUSY 1")
    assert get(tasks, task.id).state == State.Value("STATE_RUNNING")
    assert wait_for(tasks, task.id).state == State.Value("STATE_COMPLETED")
    wait_until(lambda: the_worker(channel).active_tasks == 0, 2, "BUSY 0 after the task")
