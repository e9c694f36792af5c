"""Leases and fencing, driven from the test through the generated stubs: the
test itself plays the worker on a LeaseTasks stream."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from dtq.v1 import task_pb2, task_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc
from tests.support.tasks import State, error_reason, get, submit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
pb = worker_service_pb2


class FakeWorker:
    """A LeaseTasks stream held by the test: send requests, read responses."""

    def __init__(self, stub: worker_service_pb2_grpc.WorkerServiceStub, capacity: int = 1) -> None:
        reg = stub.RegisterWorker(pb.RegisterWorkerRequest(task_types=["test_task", "noop"]))
        self.worker_id = reg.worker_id
        self._requests: queue.Queue[pb.LeaseTasksRequest | None] = queue.Queue()
        self._responses: queue.Queue[pb.LeaseTasksResponse] = queue.Queue()
        self.send(
            pb.LeaseTasksRequest(
                open=pb.StreamOpen(
                    worker_id=self.worker_id, task_types=["test_task", "noop"], capacity=capacity
                )
            )
        )
        self.call = stub.LeaseTasks(iter(self._requests.get, None), timeout=60)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except grpc.RpcError:
            pass

    def send(self, request: pb.LeaseTasksRequest) -> None:
        self._requests.put(request)

    def next(self, timeout: float = 10.0) -> pb.LeaseTasksResponse:
        return self._responses.get(timeout=timeout)

    def lease(self) -> pb.Lease:
        while True:
            response = self.next()
            if response.leases:
                return response.leases[0]

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


@pytest.fixture
def workers(channel: grpc.Channel) -> worker_service_pb2_grpc.WorkerServiceStub:
    return worker_service_pb2_grpc.WorkerServiceStub(channel)


@pytest.fixture
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def fake(workers) -> Iterator[FakeWorker]:
    worker = FakeWorker(workers)
    yield worker
    worker.close()


def test_lease_is_pushed_with_token_deadline_and_payload(tasks, fake) -> None:
    task = submit(tasks, "test_task", payload={"message": "pushed"})
    lease = fake.lease()
    assert lease.task.id == task.id
    assert lease.task.payload["message"] == "pushed"
    assert lease.task.attempts == 1
    assert len(lease.lease_token) == 32
    assert lease.expire_at.seconds > 0
    running = get(tasks, task.id)
    assert running.state == State.Value("STATE_RUNNING")
    assert running.worker_id == fake.worker_id


def test_completion_with_a_stale_or_forged_token_is_refused(tasks, workers, fake) -> None:
    task = submit(tasks, "noop")
    lease = fake.lease()
    forged = "0" * 32
    with pytest.raises(grpc.RpcError) as refused:
        workers.CompleteTask(pb.CompleteTaskRequest(task_id=task.id, lease_token=forged))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "STALE_LEASE"
    done = workers.CompleteTask(
        pb.CompleteTaskRequest(task_id=task.id, lease_token=lease.lease_token)
    )
    assert done.task.state == State.Value("STATE_COMPLETED")
    with pytest.raises(grpc.RpcError) as again:  # a token is good for one outcome only
        workers.CompleteTask(pb.CompleteTaskRequest(task_id=task.id, lease_token=lease.lease_token))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_malformed_token_and_id_are_invalid_arguments(workers) -> None:
    cases = [
        pb.CompleteTaskRequest(task_id="not-a-uuid", lease_token="0" * 32),
        pb.CompleteTaskRequest(task_id="01a22029-c605-7dad-9a72-bcb5d655ec90", lease_token="xyz"),
    ]
    for request in cases:
        with pytest.raises(grpc.RpcError) as bad:
            workers.CompleteTask(request)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_outcome_on_the_stream_is_acknowledged_and_stale_one_refused(tasks, fake) -> None:
    task = submit(tasks, "noop")
    lease = fake.lease()
    stale = pb.TaskOutcome(task_id=task.id, lease_token="1" * 32)
    stale.result.string_value = "late"
    fake.send(pb.LeaseTasksRequest(outcomes=[stale]))
    ack = fake.next().acks[0]
    assert ack.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    good = pb.TaskOutcome(task_id=task.id, lease_token=lease.lease_token)
    good.result.string_value = "done"
    fake.send(pb.LeaseTasksRequest(outcomes=[good]))
    assert fake.next().acks[0].status.code == 0
    assert get(tasks, task.id).result.string_value == "done"


def test_unary_fail_schedules_a_retry_and_extend_lease_works(tasks, workers, fake) -> None:
    task = submit(tasks, "test_task", max_retries=1)
    lease = fake.lease()
    extended = workers.ExtendLease(
        pb.ExtendLeaseRequest(task_id=task.id, lease_token=lease.lease_token)
    )
    assert extended.expire_at.seconds >= lease.expire_at.seconds
    failed = workers.FailTask(
        pb.FailTaskRequest(
            task_id=task.id,
            lease_token=lease.lease_token,
            error=task_pb2.TaskError(message="boom", type="ValueError"),
        )
    )
    assert failed.task.state == State.Value("STATE_FAILED")
    assert failed.task.last_error.type == "ValueError"
    with pytest.raises(grpc.RpcError) as late:
        workers.ExtendLease(pb.ExtendLeaseRequest(task_id=task.id, lease_token=lease.lease_token))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_heartbeat_for_an_unknown_lease_revokes_it(fake) -> None:
    ghost = pb.LeaseRef(task_id="01a22029-c605-7dad-9a72-bcb5d655ec90", lease_token="2" * 32)
    fake.send(pb.LeaseTasksRequest(heartbeats=[ghost]))
    revoked = fake.next().revocations[0]
    assert revoked.task_id == ghost.task_id
    assert revoked.reason == pb.Revocation.REASON_LEASE_LOST


def test_capacity_bounds_the_leases_held(tasks, workers) -> None:
    worker = FakeWorker(workers, capacity=2)
    try:
        for _ in range(5):
            submit(tasks, "noop")
        held = [worker.lease().task.id, worker.lease().task.id]
        with pytest.raises(queue.Empty):
            worker.next(timeout=1.0)  # nothing beyond capacity
        assert len(set(held)) == 2
    finally:
        worker.close()


def test_register_and_stream_reject_bad_input(workers) -> None:
    with pytest.raises(grpc.RpcError) as no_types:
        workers.RegisterWorker(pb.RegisterWorkerRequest(task_types=[]))
    assert no_types.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = pb.LeaseTasksRequest(heartbeats=[])  # no `open`
    with pytest.raises(grpc.RpcError) as no_open:
        list(workers.LeaseTasks(iter([first]), timeout=5))
    assert no_open.value.code() == grpc.StatusCode.INVALID_ARGUMENT
