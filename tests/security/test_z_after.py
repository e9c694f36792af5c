"""After the fuzzing (this file runs last in the package): the same server
process still serves, and 200 good tasks submitted to it all complete on a
real `dtq worker`."""

from __future__ import annotations

import time

import pytest

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.security import checks, tally
from tests.support.envoy import Envoy
from tests.support.tasks import State

pytestmark = [pytest.mark.e2e, pytest.mark.security]

GOOD = 200
COMPLETED = State.Value("STATE_COMPLETED")


def test_server_and_envoy_survived(server: Server, server_pid: int, envoy: Envoy) -> None:
    for name, proc in (("dtq server", server.proc), ("envoy", envoy.proc)):
        if not proc.alive():
            tally.FINDINGS.append(f"{name} exited")
    if server.proc.pid != server_pid:
        tally.FINDINGS.append("dtq server restarted")
    with server.channel() as channel:
        if not checks.health(channel):
            tally.FINDINGS.append("dtq server stopped answering")
    assert not tally.FINDINGS


def test_good_tasks_all_complete(server: Server, start_worker: WorkerFactory) -> None:
    with server.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        requests = [task_service_pb2.SubmitTaskRequest(type="noop") for _ in range(GOOD)]
        reply = stub.BatchSubmitTasks(
            task_service_pb2.BatchSubmitTasksRequest(requests=requests), timeout=30
        )
        ids = {r.task.id for r in reply.results}
        assert len(ids) == GOOD
        start_worker("--concurrency", "8")
        open_ids = set(ids)
        deadline = time.monotonic() + 60
        while open_ids and time.monotonic() < deadline:
            for task_id in list(open_ids):
                got = stub.GetTask(task_service_pb2.GetTaskRequest(id=task_id), timeout=10)
                if got.task.state == COMPLETED:
                    open_ids.discard(task_id)
            time.sleep(0.2)
    tally.LOST.append(len(open_ids))
    assert not open_ids, f"{len(open_ids)} of {GOOD} good tasks did not complete"
