"""Heartbeats run apart from handlers: a handler that hogs the CPU or blocks its
event loop for longer than the lease keeps its lease, and runs once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import grpc
import pytest

from dtq.v1 import task_service_pb2_grpc
from tests.conftest import WorkerFactory
from tests.support.tasks import State, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]
LEASE = 2  # seconds; the handlers below run 2.5 leases

HANDLERS = """
import time
from dtq import App

app = App()

@app.task("spin")
def spin(payload):
    end = time.monotonic() + payload["seconds"]
    n = 0
    while time.monotonic() < end:  # pure Python: holds the GIL
        n += 1
    return n > 0

@app.task("block_loop")
async def block_loop(payload):
    time.sleep(payload["seconds"])  # blocks the handlers' event loop
    return True
"""


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_LEASE_DURATION": str(LEASE)}


@pytest.fixture
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.mark.parametrize("task_type", ["spin", "block_loop"])
def test_long_handler_keeps_its_lease(
    tasks, start_worker: WorkerFactory, tmp_path: Path, task_type: str
) -> None:
    (tmp_path / "busy.py").write_text(textwrap.dedent(HANDLERS))
    start_worker("-m", "busy", "--concurrency", "2", PYTHONPATH=str(tmp_path))
    task = submit(tasks, task_type, payload={"seconds": LEASE * 2.5}, max_retries=3)
    done = wait_for(tasks, task.id, timeout=30)
    assert done.state == State.Value("STATE_COMPLETED")
    assert done.attempts == 1, "the lease expired although the worker was alive"
