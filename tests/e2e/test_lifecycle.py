"""The whole path through real processes: dtq server + dtq manager + dtq worker,
driven through the generated gRPC stubs."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.support.procs import Proc, free_port, wait_until
from tests.support.scrape import metric
from tests.support.tasks import State, get, result_of, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]

COMPLETED = State.Value("STATE_COMPLETED")
DEAD = State.Value("STATE_DEAD_LETTERED")
RUNNING = State.Value("STATE_RUNNING")
CANCELLED = State.Value("STATE_CANCELLED")
PENDING = State.Value("STATE_PENDING")
RUNNING_NOW = "dtq_worker_tasks_running"


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    # Fast retries: the n-th retry waits at most 0.2 s.
    return {"DTQ_WORKER_RETRY_BACKOFF_BASE": "2", "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2"}


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Iterator[Proc]:
    yield start_worker("--concurrency", "4")


def test_task_runs_to_completion_with_its_result(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"message": "Hello World", "sleep_duration": 0.1})
    assert task.state == PENDING
    done = wait_for(tasks, task.id)
    assert done.state == COMPLETED
    assert done.attempts == 1
    assert result_of(done) == {"message": "Hello World", "attempt": 1.0}
    assert done.worker_id
    assert done.started_at.ToNanoseconds() <= done.finished_at.ToNanoseconds()


def test_every_builtin_example_completes(tasks, worker) -> None:
    examples = {
        "image_processing": {"image_url": "https://example.com/a.jpg", "operations": ["resize"]},
        "email_sending": {"recipient": "user@example.com", "subject": "Welcome!"},
        "data_etl": {"source": "users.csv", "destination": "users_table", "batch_size": 1000},
        "noop": {},
    }
    ids = {name: submit(tasks, name, payload=body).id for name, body in examples.items()}
    for name, task_id in ids.items():
        assert wait_for(tasks, task_id).state == COMPLETED, name


def test_batch_of_many_tasks_all_complete(tasks, worker) -> None:
    requests = [task_service_pb2.SubmitTaskRequest(type="noop") for _ in range(300)]
    reply = tasks.BatchSubmitTasks(task_service_pb2.BatchSubmitTasksRequest(requests=requests))
    ids = [r.task.id for r in reply.results]
    assert len(set(ids)) == 300
    for task_id in ids:
        assert wait_for(tasks, task_id, timeout=30).state == COMPLETED


def test_failing_task_is_retried_then_dead_lettered(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"fail": True}, max_retries=2)
    dead = wait_for(tasks, task.id)
    assert dead.state == DEAD
    assert dead.attempts == 3  # the first attempt and two retries
    assert dead.last_error.type == "RuntimeError"
    assert "test_task" in dead.last_error.traceback


def test_task_that_fails_once_succeeds_on_retry(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"fail_times": 1})
    done = wait_for(tasks, task.id)
    assert (done.state, done.attempts) == (COMPLETED, 2)
    assert done.last_error.type == "RuntimeError"  # the failure is kept for the record


def test_permanent_error_dead_letters_at_once(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"fail": True, "permanent": True}, max_retries=5)
    dead = wait_for(tasks, task.id)
    assert (dead.state, dead.attempts) == (DEAD, 1)
    assert dead.last_error.permanent


def test_retry_task_requeues_a_dead_letter_with_a_fresh_budget(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"fail_times": 1}, max_retries=0)
    assert wait_for(tasks, task.id).state == DEAD
    again = tasks.RetryTask(task_service_pb2.RetryTaskRequest(id=task.id)).task
    assert again.state == PENDING
    done = wait_for(tasks, task.id)
    assert (done.state, done.attempts) == (COMPLETED, 2)


def test_timeout_interrupts_a_slow_handler(tasks, worker) -> None:
    task = submit(
        tasks, "test_task", payload={"sleep_duration": 30}, max_retries=0, timeout={"seconds": 1}
    )
    dead = wait_for(tasks, task.id, timeout=15)
    assert dead.state == DEAD
    assert dead.last_error.type == "TimeoutError"


def test_cancel_interrupts_a_running_task(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"sleep_duration": 60})
    wait_for(tasks, task.id, {RUNNING})
    cancelled = tasks.CancelTask(task_service_pb2.CancelTaskRequest(id=task.id)).task
    assert cancelled.state == CANCELLED
    deadline = time.monotonic() + 10
    while "lease_revoked" not in worker.output():
        assert time.monotonic() < deadline, "the worker was not told to stop the task"
        time.sleep(0.05)
    time.sleep(0.3)
    assert get(tasks, task.id).state == CANCELLED  # its late outcome changed nothing


def test_scheduled_task_never_runs_early(tasks, worker) -> None:
    due = time.time() + 1.5
    task = submit(tasks, "noop", scheduled_at={"seconds": int(due), "nanos": int(due % 1 * 1e9)})
    assert task.state == State.Value("STATE_SCHEDULED")
    done = wait_for(tasks, task.id, timeout=10)
    assert done.state == COMPLETED
    assert done.started_at.ToNanoseconds() / 1e9 >= due


def test_priorities_are_served_high_to_low(tasks, server: Server, start_worker) -> None:
    low = submit(tasks, "noop", priority=task_pb2.PRIORITY_LOW)
    medium = submit(tasks, "noop", priority=task_pb2.PRIORITY_MEDIUM)
    high = submit(tasks, "noop", priority=task_pb2.PRIORITY_HIGH)
    start_worker("--concurrency", "1")
    started = {
        name: wait_for(tasks, t.id).started_at.ToNanoseconds()
        for name, t in {"low": low, "medium": medium, "high": high}.items()
    }
    assert started["high"] < started["medium"] < started["low"]


def test_tasks_run_concurrently_up_to_the_concurrency(tasks, worker) -> None:
    ids = [submit(tasks, "test_task", payload={"sleep_duration": 1}).id for _ in range(4)]
    done = [wait_for(tasks, i) for i in ids]
    starts = [t.started_at.ToNanoseconds() for t in done]
    ends = [t.finished_at.ToNanoseconds() for t in done]
    assert max(starts) < min(ends), "the four tasks did not overlap"


def test_worker_loads_handlers_from_a_module_named_on_the_command_line(
    tasks, start_worker, tmp_path: Path
) -> None:
    (tmp_path / "my_handlers.py").write_text(
        textwrap.dedent(
            """
            from dtq import App

            app = App()

            @app.task("shout")
            def shout(payload):
                return payload["text"].upper()

            @app.task("add")
            async def add(payload, ctx):
                return {"sum": payload["a"] + payload["b"], "attempt": ctx.attempt}
            """
        )
    )
    start_worker("-m", "my_handlers", PYTHONPATH=str(tmp_path))
    shout = submit(tasks, "shout", payload={"text": "hi"})
    add = submit(tasks, "add", payload={"a": 2, "b": 3})
    assert result_of(wait_for(tasks, shout.id)) == "HI"
    assert result_of(wait_for(tasks, add.id)) == {"sum": 5.0, "attempt": 1.0}


def test_sigterm_lets_running_tasks_finish(tasks, start_worker) -> None:
    port = free_port()
    proc = start_worker("--concurrency", "2", "--metrics-port", str(port))
    task = submit(tasks, "test_task", payload={"sleep_duration": 1})
    # RUNNING in PostgreSQL is not yet running on the worker: the lease may
    # still be on its way (a lease the worker never got goes back at once).
    wait_until(lambda: metric(port, RUNNING_NOW) == 1, 10, "the handler to start")
    proc.signal(15)
    assert proc.popen.wait(20) == 0
    assert get(tasks, task.id).state == COMPLETED


def test_watch_streams_every_state_until_terminal(tasks, worker) -> None:
    task = submit(tasks, "test_task", payload={"sleep_duration": 0.5})
    seen = [
        r.task.state
        for r in tasks.WatchTask(task_service_pb2.WatchTaskRequest(id=task.id), timeout=20)
    ]
    assert seen[-1] == COMPLETED
    assert RUNNING in seen
    assert seen == sorted(set(seen), key=seen.index)  # no repeats
