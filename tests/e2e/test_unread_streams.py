"""Lease streams that never read (issue 10): 300 of them took 3,000 tasks and all
were dead-lettered within 30 s, each expired lease counting as an attempt of
work no one ran. A lease counts once the worker shows it has it (a heartbeat,
an outcome or a release naming it); one it never mentions is handed back
without using up a retry, and its stream gets no more leases until it speaks.

Raw gRPC streams that register, open LeaseTasks and never read, beside one real
`dtq worker`, against a real `dtq server` and `dtq manager`.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import pytest

from dtq.v1 import task_pb2, worker_service_pb2_grpc
from dtq.v1 import task_service_pb2 as tpb
from dtq.v1 import task_service_pb2_grpc as tgrpc
from dtq.v1 import worker_service_pb2 as wpb
from tests.conftest import Server, WorkerFactory
from tests.support.procs import Proc

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
State = task_pb2.Task.State
STREAMS, CAPACITY, TASKS = 20, 50, 100
LEASE = 3  # seconds; workers heartbeat every second


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_LEASE_DURATION": str(LEASE), "DTQ_WORKER_POLL_INTERVAL": "0.5"}


@pytest.fixture
def unread(server: Server) -> Iterator[list[grpc.Future]]:
    """STREAMS lease streams, each on its own connection, opened and never read."""
    channels, calls, gates = [], [], []
    for _ in range(STREAMS):
        channel = server.channel()
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        worker = stub.RegisterWorker(
            wpb.RegisterWorkerRequest(task_types=["test_task"], concurrency=CAPACITY), timeout=10
        )
        gate: queue.Queue[wpb.LeaseTasksRequest | None] = queue.Queue()
        gate.put(
            wpb.LeaseTasksRequest(
                open=wpb.StreamOpen(
                    worker_id=worker.worker_id, task_types=["test_task"], capacity=CAPACITY
                )
            )
        )
        calls.append(stub.LeaseTasks(iter(gate.get, None)))  # never iterated: never read
        channels.append(channel)
        gates.append(gate)
    yield calls
    for gate, call, channel in zip(gates, calls, channels, strict=True):
        gate.put(None)
        call.cancel()
        channel.close()


def test_unread_streams_do_not_dead_letter_work(
    channel: grpc.Channel,
    manager: Proc,
    unread: list[grpc.Future],
    start_worker: WorkerFactory,
) -> None:
    tasks = tgrpc.TaskServiceStub(channel)
    time.sleep(1)  # the streams are open and waiting for work
    ids = [
        tasks.SubmitTask(tpb.SubmitTaskRequest(type="test_task"), timeout=10).task.id
        for _ in range(TASKS)
    ]
    start_worker("--concurrency", "8")
    deadline = time.monotonic() + 60
    states: dict[int, int] = {}
    while time.monotonic() < deadline:
        found = [tasks.GetTask(tpb.GetTaskRequest(id=i), timeout=10).task for i in ids]
        states = {s: sum(t.state == s for t in found) for s in {t.state for t in found}}
        if states.get(State.Value("STATE_COMPLETED")) == TASKS:
            break
        assert not states.get(State.Value("STATE_DEAD_LETTERED")), states
        time.sleep(0.5)
    assert states == {State.Value("STATE_COMPLETED"): TASKS}, {
        State.Name(s): n for s, n in states.items()
    }
    # A task handed back from a stream that never read says so: were that
    # stream only paused, its worker could still run the attempt (a duplicate).
    errors = {tasks.GetTask(tpb.GetTaskRequest(id=i), timeout=10).task.last_error.type for i in ids}
    assert "LeaseRevoked" in errors, errors
    assert "LeaseExpired" not in errors, errors
