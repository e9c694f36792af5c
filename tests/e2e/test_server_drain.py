"""SIGTERM on an API server: its workers move to another replica and keep
their leases; the running task completes once, on its first attempt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server, start_server
from tests.support.procs import Proc, dtq_args, wait_until
from tests.support.tasks import State, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


@pytest.fixture
def replicas(pg_url: str, redis_url: str) -> Iterator[list[Server]]:
    servers = [start_server(pg_url, redis_url), start_server(pg_url, redis_url)]
    yield servers
    for srv in servers:
        srv.proc.stop()


def opened(server: Server) -> bool:
    return "stream_opened" in server.proc.output()


def test_worker_follows_a_draining_server_to_another_replica(replicas: list[Server]) -> None:
    first, second = replicas
    both = f"{first.address},{second.address}"
    worker = Proc(
        "worker",
        dtq_args("worker", "--metrics-port", "0", "--concurrency", "1"),
        {**first.env, "DTQ_SERVER_ADDRESS": both},
    )
    try:
        # The worker logs worker_connected once it has written its opening
        # message; the server logs stream_opened once it has read it.
        wait_until(lambda: any(opened(s) for s in replicas), 30, "worker stream")
        holder = next(s for s in replicas if opened(s))
        other = second if holder is first else first
        with other.channel() as channel:
            tasks = task_service_pb2_grpc.TaskServiceStub(channel)
            task = submit(tasks, "test_task", payload={"sleep_duration": 2})
            wait_for(tasks, task.id, {State.Value("STATE_RUNNING")})
            holder.proc.signal(15)
            wait_until(lambda: opened(other), 15, "reconnect")
            done = wait_for(tasks, task.id, timeout=30)
        assert done.state == State.Value("STATE_COMPLETED")
        assert done.attempts == 1, "the lease was lost in the move"
        assert holder.proc.popen.wait(15) == 0
    finally:
        worker.stop()
