"""The client rides out an unreachable or restarting server without duplicates:
real `dtq server` processes on a port chosen in advance, and a stand-in
TaskService that answers UNAVAILABLE with RetryInfo."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_status import rpc_status

from dtq import Client
from dtq.api.errors import status_of
from dtq.client import RetryPolicy, TaskHandle, Unavailable
from dtq.domain.errors import DtqError
from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, start_server
from tests.support.procs import Proc, dtq_args, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
PATIENT = RetryPolicy(attempts=60, initial=0.1, maximum=1.0)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.proc.stop()


def test_submit_waits_for_a_server_that_is_starting(pg_url, redis_url, servers) -> None:
    port = free_port()
    with Client(f"127.0.0.1:{port}", retry=PATIENT) as client:
        # The submitter runs in a thread, the server starts from the main one
        # (gRPC dislikes a fork from a thread while another one calls).
        submitted: list[TaskHandle] = []
        submitter = threading.Thread(target=lambda: submitted.append(client.submit("noop")))
        submitter.start()
        time.sleep(0.5)  # it has met a refused connection
        servers.append(start_server(pg_url, redis_url, port=port))
        submitter.join(60)
        (handle,) = submitted
        assert handle.task.idempotency_key  # generated: the retries were safe
        again = client.submit("noop", idempotency_key=handle.task.idempotency_key)
        assert (again.id, again.deduplicated) == (handle.id, True)
        assert [t.id for t in client.list()] == [handle.id]


def test_result_survives_a_server_restart(pg_url, redis_url, servers) -> None:
    port = free_port()
    servers.append(start_server(pg_url, redis_url, port=port))
    with Client(f"127.0.0.1:{port}", retry=PATIENT) as client:
        handle = client.submit("test_task", {"message": "after restart"})
        waiting: list[object] = []
        watcher = threading.Thread(target=lambda: waiting.append(handle.result(timeout=60)))
        watcher.start()
        time.sleep(0.5)  # the watch is open
        servers.pop().proc.stop()
        servers.append(start_server(pg_url, redis_url, port=port))
        worker = Proc("worker", dtq_args("worker", "--metrics-port", "0"), worker_env(servers[0]))
        try:
            watcher.join(60)
        finally:
            worker.stop()
        assert waiting == [{"message": "after restart", "attempt": 1}]


def worker_env(server: Server) -> dict[str, str]:
    return {**server.env, "DTQ_SERVER_ADDRESS": server.address}


class Flaky(task_service_pb2_grpc.TaskServiceServicer):
    """Stores the first submission, then loses the reply: UNAVAILABLE + RetryInfo."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def SubmitTask(self, request, context):  # type: ignore[no-untyped-def]
        self.keys.append(request.idempotency_key)
        if len(self.keys) == 1:
            error = DtqError.unavailable("postgres", "lost the reply", retry_after=0.3)
            context.abort_with_status(rpc_status.to_status(status_of(error)))
        task = task_pb2.Task(id="t1", type=request.type, idempotency_key=request.idempotency_key)
        return task_service_pb2.SubmitTaskResponse(task=task, deduplicated=True)


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)])
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_a_lost_reply_is_retried_with_the_same_key_after_retry_info(flaky) -> None:
    servicer, address = flaky
    with Client(address) as client:
        start = time.monotonic()
        handle = client.submit("noop")
        assert time.monotonic() - start >= 0.3  # RetryInfo's delay, not the 0.1 s backoff
    assert len(servicer.keys) == 2 and servicer.keys[0] == servicer.keys[1]
    assert (handle.id, handle.deduplicated) == ("t1", True)


def test_retries_are_bounded(flaky) -> None:
    servicer, address = flaky
    with (
        Client(address, retry=RetryPolicy(attempts=1)) as client,
        pytest.raises(Unavailable) as caught,
    ):
        client.submit("noop")
    assert (caught.value.reason, caught.value.retry_after) == ("POSTGRES_UNAVAILABLE", 0.3)
    assert len(servicer.keys) == 1
