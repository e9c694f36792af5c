"""Timeouts and cancellation that really stop handlers, and leases handed back on
shutdown: real dtq server, manager and worker processes, with handlers that
never look at `ctx.cancelled`."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.conftest import WorkerFactory
from tests.support.procs import Proc, wait_until
from tests.support.tasks import State, get, result_of, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]

COMPLETED = State.Value("STATE_COMPLETED")
DEAD = State.Value("STATE_DEAD_LETTERED")
RUNNING = State.Value("STATE_RUNNING")
CANCELLED = State.Value("STATE_CANCELLED")
PENDING = State.Value("STATE_PENDING")

HANDLERS = """
import os
import time

from dtq import App

app = App()


def mark(path, text):
    with open(path, "w") as f:
        f.write(text)


@app.task("spin")
def spin(payload):
    # CPU-bound pure Python that never checks ctx.cancelled.
    mark(payload["marker"], "started")
    try:
        n = 0
        while True:
            n += 1
    finally:
        mark(payload["marker"], "stopped")


@app.task("sleepy")
def sleepy(payload):
    # Blocked in C code (time.sleep), deaf to cancellation.
    mark(payload["marker"], str(os.getpid()))
    time.sleep(60)
    return "woke up"


@app.task("slow_once")
def slow_once(payload):
    # Hangs on its first run, returns at once on the next one.
    if os.path.exists(payload["marker"]):
        return "second run"
    mark(payload["marker"], str(os.getpid()))
    time.sleep(60)
    return "first run"


@app.task("die_once")
def die_once(payload, ctx):
    if ctx.attempt == 1:
        os._exit(1)
    return {"attempt": ctx.attempt}


@app.task("quick")
def quick(payload):
    return "done"
"""


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    # Fast retries: the n-th retry waits at most 0.2 s.
    return {"DTQ_WORKER_RETRY_BACKOFF_BASE": "2", "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2"}


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    (tmp_path / "interrupt_handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


@pytest.fixture
def run_worker(start_worker: WorkerFactory, handlers: Path) -> Callable[..., Proc]:
    def start(*args: str, **env: str) -> Proc:
        return start_worker("-m", "interrupt_handlers", *args, PYTHONPATH=str(handlers), **env)

    return start


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_marker(path: Path, check: Callable[[str], bool], timeout: float, what: str) -> str:
    wait_until(lambda: check(read(path)), timeout, what)
    return read(path)


def cancel(tasks: task_service_pb2_grpc.TaskServiceStub, task_id: str) -> None:
    reply = tasks.CancelTask(task_service_pb2.CancelTaskRequest(id=task_id), timeout=10)
    assert reply.task.state == CANCELLED


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- thread pool (default) -------------------------------------------------------------


def test_timeout_interrupts_a_cpu_bound_thread_handler(tasks, run_worker, tmp_path) -> None:
    run_worker("--concurrency", "1")
    marker = tmp_path / "spin"
    task = submit(
        tasks, "spin", payload={"marker": str(marker)}, max_retries=0, timeout={"seconds": 1}
    )
    dead = wait_for(tasks, task.id, timeout=15)
    assert (dead.state, dead.last_error.type) == (DEAD, "TimeoutError")
    wait_marker(marker, lambda t: t == "stopped", 5, "the handler's thread to stop")
    assert wait_for(tasks, submit(tasks, "quick").id).state == COMPLETED


def test_cancel_interrupts_a_cpu_bound_thread_handler(tasks, run_worker, tmp_path) -> None:
    run_worker("--concurrency", "1")
    marker = tmp_path / "spin"
    task = submit(tasks, "spin", payload={"marker": str(marker)}, timeout={"seconds": 120})
    wait_marker(marker, lambda t: t == "started", 15, "the handler to start")
    cancel(tasks, task.id)
    wait_marker(marker, lambda t: t == "stopped", 5, "the handler's thread to stop")
    assert get(tasks, task.id).state == CANCELLED
    assert wait_for(tasks, submit(tasks, "quick").id).state == COMPLETED


# -- process pool ------------------------------------------------------------------------


def test_process_pool_kills_a_sleeping_handler_at_its_timeout(tasks, run_worker, tmp_path) -> None:
    run_worker("--concurrency", "1", "--pool", "process")
    marker = tmp_path / "sleepy"
    started = time.monotonic()
    task = submit(
        tasks, "sleepy", payload={"marker": str(marker)}, max_retries=0, timeout={"seconds": 1}
    )
    dead = wait_for(tasks, task.id, timeout=20)
    assert (dead.state, dead.last_error.type) == (DEAD, "TimeoutError")
    assert time.monotonic() - started < 15  # not the handler's 60 s
    pid = int(wait_marker(marker, str.isdigit, 5, "the handler's pid"))
    wait_until(lambda: gone(pid), 5, "the handler's process to be killed")
    assert result_of(wait_for(tasks, submit(tasks, "quick").id)) == "done"


def test_process_pool_cancel_kills_the_handler(tasks, run_worker, tmp_path) -> None:
    run_worker("--concurrency", "1", "--pool", "process")
    marker = tmp_path / "sleepy"
    task = submit(tasks, "sleepy", payload={"marker": str(marker)}, timeout={"seconds": 120})
    pid = int(wait_marker(marker, str.isdigit, 20, "the handler to start"))
    cancel(tasks, task.id)
    wait_until(lambda: gone(pid), 5, "the handler's process to be killed")
    assert get(tasks, task.id).state == CANCELLED
    assert result_of(wait_for(tasks, submit(tasks, "quick").id)) == "done"


def test_handler_that_kills_its_process_fails_with_worker_process_died_and_is_retried(
    tasks, run_worker
) -> None:
    run_worker("--concurrency", "1", "--pool", "process")
    task = submit(tasks, "die_once", max_retries=2)
    done = wait_for(tasks, task.id, timeout=30)
    assert (done.state, done.attempts) == (COMPLETED, 2)
    assert result_of(done) == {"attempt": 2.0}
    assert done.last_error.type == "WorkerProcessDied"


# -- shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_sigterm_hands_an_unfinished_task_back_at_once(tasks, run_worker, tmp_path, pool) -> None:
    first = run_worker("--pool", pool, DTQ_WORKER_SHUTDOWN_GRACE="1")
    marker = tmp_path / "slow"
    task = submit(tasks, "slow_once", payload={"marker": str(marker)})
    wait_marker(marker, str.isdigit, 20, "the handler to start")
    assert get(tasks, task.id).attempts == 1
    stopped = time.monotonic()
    first.signal(signal.SIGTERM)
    pending = wait_for(tasks, task.id, {PENDING}, timeout=10)
    assert time.monotonic() - stopped < 8  # the lease (30 s) did not have to expire
    assert pending.attempts == 1  # attempt numbers are never reused...
    assert pending.max_retries == task.max_retries + 1  # ...but no retry was used up
    assert first.popen.wait(10) == 0
    assert "task_released" in first.output()
    run_worker()
    done = wait_for(tasks, task.id, timeout=20)
    assert (done.state, done.attempts) == (COMPLETED, 2)
    assert result_of(done) == "second run"
