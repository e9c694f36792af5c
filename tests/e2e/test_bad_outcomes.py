"""Payloads and outcomes a fuzzer sent that lost or wedged good work (issue 10).

- A payload nested 48 deep was accepted; no worker could decode its lease, and
  each one that got it exited 1, again at every lease expiry. Submits (and
  results) deeper than 32 levels are refused now, and a worker that still gets
  a lease it cannot decode fails that task and runs on.
- A NUL in an outcome (PostgreSQL text cannot hold it) left the task RUNNING
  forever: the server dropped the outcome without an ack and the worker resent
  it in every heartbeat. FailTask answered INTERNAL. The NUL is stored as U+FFFD.

A real `dtq server`, `dtq worker` and Envoy; raw lease streams where a test
plays the worker itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from sqlalchemy import create_engine, text

from dtq.v1 import task_pb2, worker_service_pb2_grpc
from dtq.v1 import task_service_pb2 as tpb
from dtq.v1 import task_service_pb2_grpc as tgrpc
from dtq.v1 import worker_service_pb2 as wpb
from tests.conftest import Server, WorkerFactory
from tests.e2e.test_bad_input import assert_invalid
from tests.e2e.test_leases import FakeWorker
from tests.e2e.test_rest import INVALID_ARGUMENT, Rest, assert_error
from tests.support.env import sqlalchemy_url
from tests.support.envoy import Envoy, running_envoy
from tests.support.tasks import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
State = task_pb2.Task.State
NUL = "bad\x00byte"
FFFD = "bad\ufffdbyte"


def lists(depth: int) -> Any:
    """The fuzzer's payload value: `depth` arrays, one inside the other."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def objects(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def struct(body: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(body)
    return s


DEEP = {"k": lists(48)}  # 49 levels: the payload the fuzzer sent


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as running:
        yield running


@pytest.fixture
def tasks(channel: grpc.Channel) -> tgrpc.TaskServiceStub:
    return tgrpc.TaskServiceStub(channel)


@pytest.fixture
def workers(channel: grpc.Channel) -> worker_service_pb2_grpc.WorkerServiceStub:
    return worker_service_pb2_grpc.WorkerServiceStub(channel)


# -- (a) nesting depth --------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [DEEP, {"k": lists(32)}, {"k": objects(32)}], ids=["lists48", "lists32", "objects32"]
)
def test_a_payload_nested_deeper_than_32_is_refused(
    tasks: tgrpc.TaskServiceStub, envoy: Envoy, body: dict[str, Any]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        tasks.SubmitTask(tpb.SubmitTaskRequest(type="test_task", payload=struct(body)), timeout=10)
    assert_invalid(caught.value, "payload", "NESTED_TOO_DEEP")
    batch = tpb.BatchSubmitTasksRequest(
        requests=[
            tpb.SubmitTaskRequest(type="test_task"),
            tpb.SubmitTaskRequest(type="test_task", payload=struct(body)),
        ]
    )
    with pytest.raises(grpc.RpcError) as caught:
        tasks.BatchSubmitTasks(batch, timeout=10)
    assert_invalid(caught.value, "requests[1].payload", "NESTED_TOO_DEEP")
    reply = Rest(envoy.port).post("/api/v1/tasks", {"type": "test_task", "payload": body})
    assert_error(reply, 400, INVALID_ARGUMENT, "NESTED_TOO_DEEP", ("payload",))
    assert Rest(envoy.port).ok("GET", "/api/v1/tasks")["tasks"] == []


def test_a_payload_32_deep_runs(tasks: tgrpc.TaskServiceStub, start_worker: WorkerFactory) -> None:
    start_worker()
    ids = [
        tasks.SubmitTask(
            tpb.SubmitTaskRequest(type="test_task", payload=struct(body)), timeout=10
        ).task.id
        for body in ({"k": lists(31)}, {"k": objects(31)})
    ]
    for task_id in ids:
        assert wait_for(tasks, task_id).state == State.Value("STATE_COMPLETED")


@pytest.fixture
def fake(workers: worker_service_pb2_grpc.WorkerServiceStub) -> Iterator[FakeWorker]:
    worker = FakeWorker(workers)
    yield worker
    worker.close()


def ack(worker: FakeWorker, task_id: str) -> wpb.OutcomeAck:
    """The server's answer to the outcome of `task_id`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for answer in worker.next(timeout=20).acks:
            if answer.task_id == task_id:
                return answer
    raise TimeoutError(f"no ack for {task_id}")


def submit(tasks: tgrpc.TaskServiceStub, **body: Any) -> str:
    request = tpb.SubmitTaskRequest(type="test_task", payload=struct(body), max_retries=0)
    return tasks.SubmitTask(request, timeout=10).task.id


@pytest.fixture
def leased(tasks: tgrpc.TaskServiceStub, fake: FakeWorker) -> tuple[str, str]:
    """A task (no retries) leased to the test: its id and lease token."""
    task_id = submit(tasks)
    lease = fake.lease()
    assert lease.task.id == task_id
    return task_id, lease.lease_token


def test_a_result_nested_too_deep_is_refused_by_complete_task(
    tasks: tgrpc.TaskServiceStub,
    workers: worker_service_pb2_grpc.WorkerServiceStub,
    leased: tuple[str, str],
) -> None:
    task_id, token = leased
    deep = json_format.ParseDict(DEEP, struct_pb2.Value())
    request = wpb.CompleteTaskRequest(task_id=task_id, lease_token=token, result=deep)
    with pytest.raises(grpc.RpcError) as caught:
        workers.CompleteTask(request, timeout=10)
    assert_invalid(caught.value, "result", "NESTED_TOO_DEEP")
    request.result.CopyFrom(json_format.ParseDict({"k": lists(31)}, struct_pb2.Value()))
    done = workers.CompleteTask(request, timeout=10).task
    assert done.state == State.Value("STATE_COMPLETED")


def test_a_result_nested_too_deep_on_the_stream_fails_the_task(
    tasks: tgrpc.TaskServiceStub, fake: FakeWorker, leased: tuple[str, str]
) -> None:
    task_id, token = leased
    # 41 levels: the lease stream's request decodes on the server, its result
    # would not decode in GetTask replies everywhere.
    deep = json_format.ParseDict({"k": lists(40)}, struct_pb2.Value())
    outcome = wpb.TaskOutcome(task_id=task_id, lease_token=token, result=deep)
    fake.send(wpb.LeaseTasksRequest(outcomes=[outcome]))
    assert ack(fake, task_id).status.code == 0  # settled: not to be sent again
    task = wait_for(tasks, task_id)
    assert task.state == State.Value("STATE_DEAD_LETTERED")  # max_retries=0
    assert task.last_error.type == "ResultTooDeep"


def test_a_worker_survives_a_lease_it_cannot_decode(
    tasks: tgrpc.TaskServiceStub, start_worker: WorkerFactory, pg_url: str
) -> None:
    """A task stored before submits were bounded: its payload, deeper than any
    decoder reads inside a lease, is written straight into PostgreSQL."""
    bad = submit(tasks, k="soon too deep")
    engine = create_engine(sqlalchemy_url(pg_url))
    with engine.begin() as db:
        db.execute(
            text("UPDATE tasks SET payload = :p WHERE id = :id"),
            {"p": struct(DEEP).SerializeToString(), "id": bad},
        )
    engine.dispose()
    good = [submit(tasks, i=i) for i in range(3)]
    worker = start_worker()
    task = wait_for(tasks, bad)
    assert task.state == State.Value("STATE_DEAD_LETTERED")
    assert (task.last_error.type, task.last_error.permanent) == ("UndecodableLease", True)
    for task_id in good:
        assert wait_for(tasks, task_id).state == State.Value("STATE_COMPLETED")
    assert worker.alive()
    assert "Traceback" not in worker.output()


# -- (b) NUL in an outcome ---------------------------------------------------------


def nul_error() -> task_pb2.TaskError:
    return task_pb2.TaskError(message=NUL, type=NUL, traceback=NUL)


def test_fail_task_with_a_nul_settles_it(
    tasks: tgrpc.TaskServiceStub,
    workers: worker_service_pb2_grpc.WorkerServiceStub,
    leased: tuple[str, str],
) -> None:
    task_id, token = leased
    request = wpb.FailTaskRequest(task_id=task_id, lease_token=token, error=nul_error())
    task = workers.FailTask(request, timeout=10).task
    assert task.state == State.Value("STATE_DEAD_LETTERED")
    error = wait_for(tasks, task_id).last_error
    assert (error.message, error.type, error.traceback) == (FFFD, FFFD, FFFD)


def test_complete_task_with_a_nul_in_the_result(
    tasks: tgrpc.TaskServiceStub,
    workers: worker_service_pb2_grpc.WorkerServiceStub,
    leased: tuple[str, str],
) -> None:
    task_id, token = leased
    result = json_format.ParseDict({NUL: NUL}, struct_pb2.Value())
    request = wpb.CompleteTaskRequest(task_id=task_id, lease_token=token, result=result)
    assert workers.CompleteTask(request, timeout=10).task.state == State.Value("STATE_COMPLETED")
    assert json_format.MessageToDict(wait_for(tasks, task_id).result) == {NUL: NUL}


@pytest.mark.parametrize("kind", ["error", "result"])
def test_an_outcome_with_a_nul_on_the_stream_settles_the_task(
    tasks: tgrpc.TaskServiceStub, fake: FakeWorker, leased: tuple[str, str], kind: str
) -> None:
    task_id, token = leased
    outcome = wpb.TaskOutcome(task_id=task_id, lease_token=token)
    if kind == "error":
        outcome.error.CopyFrom(nul_error())
    else:
        outcome.result.CopyFrom(json_format.ParseDict({NUL: NUL}, struct_pb2.Value()))
    fake.send(wpb.LeaseTasksRequest(outcomes=[outcome]))
    assert ack(fake, task_id).status.code == 0
    task = wait_for(tasks, task_id, timeout=10)
    if kind == "error":
        assert task.state == State.Value("STATE_DEAD_LETTERED")
        assert task.last_error.message == FFFD
    else:
        assert task.state == State.Value("STATE_COMPLETED")


@pytest.mark.parametrize("path", ["FailTask", "stream"])
def test_an_empty_error_message_is_stored_alike_on_both_paths(
    tasks: tgrpc.TaskServiceStub,
    workers: worker_service_pb2_grpc.WorkerServiceStub,
    fake: FakeWorker,
    leased: tuple[str, str],
    path: str,
) -> None:
    """FailTask stored "failed" for an empty message, the stream stored "": one rule now."""
    task_id, token = leased
    error = task_pb2.TaskError(type="ValueError", permanent=True)
    if path == "FailTask":
        workers.FailTask(wpb.FailTaskRequest(task_id=task_id, lease_token=token, error=error))
    else:
        outcome = wpb.TaskOutcome(task_id=task_id, lease_token=token, error=error)
        fake.send(wpb.LeaseTasksRequest(outcomes=[outcome]))
        assert ack(fake, task_id).status.code == 0
    task = wait_for(tasks, task_id, timeout=10)
    assert (task.last_error.message, task.last_error.type) == ("failed", "ValueError")
