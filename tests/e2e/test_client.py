"""dtq.Client against real processes: dtq server, manager and worker (the
built-in example handlers: `test_task`, `noop`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from dtq import Client
from dtq.client import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Submission,
    TaskCancelled,
    TaskFailed,
    TaskState,
)
from tests.conftest import Server, WorkerFactory
from tests.support.procs import Proc

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(server.address) as c:
        yield c


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Proc:
    return start_worker("--concurrency", "8")


def test_submit_then_result_is_the_handlers_value(client: Client, worker: Proc) -> None:
    handle = client.submit("test_task", {"message": "hi"}, priority="high", max_retries=0)
    assert handle.state == TaskState.PENDING
    assert handle.result(timeout=20) == {"message": "hi", "attempt": 1}
    assert handle.state == TaskState.COMPLETED
    assert handle.refresh().worker_id


def test_failure_raises_task_failed_with_the_remote_traceback(client, worker) -> None:
    payload = {"fail": True, "permanent": True, "error": "no such mailbox"}
    handle = client.submit("test_task", payload)
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=20)
    assert caught.value.error_type == "PermanentError"
    assert caught.value.message == "no such mailbox"
    assert "test_task" in caught.value.traceback
    assert handle.state == TaskState.DEAD_LETTERED


def test_cancel_makes_result_raise_task_cancelled(client, worker) -> None:
    handle = client.submit("test_task", {"sleep_duration": 60})
    for task in client.watch(handle.id, timeout=20):
        if task.state == TaskState.RUNNING:
            break
    assert client.cancel(handle.id).state == TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        handle.result(timeout=10)
    with pytest.raises(FailedPrecondition) as caught:
        client.cancel(handle.id)
    assert caught.value.reason


def test_result_times_out_without_polling(client, worker) -> None:
    handle = client.submit("test_task", {"sleep_duration": 30})
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    handle.cancel()


def test_invalid_argument_carries_field_violations(client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.submit("test_task", {}, max_retries=1000)
    assert caught.value.reason
    assert [v.field for v in caught.value.violations] == ["max_retries"]
    with pytest.raises(InvalidArgument) as caught:
        client.submit_many([Submission("noop"), Submission("9bad")])
    assert [v.field for v in caught.value.violations] == ["requests[1].type"]


def test_not_found(client) -> None:
    with pytest.raises(NotFound) as caught:
        client.get(str(uuid.uuid4()))
    assert caught.value.reason == "TASK_NOT_FOUND"


def test_same_idempotency_key_returns_the_first_task(client) -> None:
    first = client.submit("noop", {"n": 1}, queue="idem", idempotency_key="order-42")
    again = client.submit("noop", {"n": 1}, queue="idem", idempotency_key="order-42")
    assert (again.id, again.deduplicated, first.deduplicated) == (first.id, True, False)


def test_list_iterates_every_page(client) -> None:
    handles = client.submit_many([Submission("noop", {"i": i}, queue="paging") for i in range(23)])
    listed = [t.id for t in client.list(queue="paging", page_size=5)]
    assert sorted(listed) == sorted(h.id for h in handles)
    assert len(listed) == 23
    full = next(iter(client.list(queue="paging", page_size=1, full=True)))
    assert full.payload is not None and "i" in full.payload


def test_pause_resume_and_queue_stats(client: Client) -> None:
    # Right after `clean` flushed Redis, while the manager copies pause flags
    # back from PostgreSQL (a resume during that copy used to be undone).
    client.submit("noop", queue="stats")
    assert client.pause("stats").paused
    (stats,) = client.queue_stats("stats")
    assert (stats.queue, stats.paused, stats.pending) == ("stats", True, 1)
    assert not client.resume("stats").paused


def test_retry_requeues_a_dead_letter(client, worker) -> None:
    handle = client.submit("test_task", {"fail_times": 1}, max_retries=0)
    with pytest.raises(TaskFailed):
        handle.result(timeout=20)
    assert client.retry(handle.id).state == TaskState.PENDING
    assert handle.result(timeout=20) == {"message": "", "attempt": 2}  # watches again
    with pytest.raises(FailedPrecondition):
        handle.retry()  # completed: nothing to retry


def test_delay_on_a_registered_handler(client, worker) -> None:
    from dtq import examples

    examples.app.client = client
    try:
        handle = examples.test_task.delay(message="from delay")
        other = examples.test_task.submit({"message": "from submit"}, priority="low")
    finally:
        examples.app.client = None
    assert handle.result(timeout=20)["message"] == "from delay"
    assert other.result(timeout=20)["message"] == "from submit"


def test_many_threads_share_one_client(client, worker) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def submit_some() -> None:
        try:
            for _ in range(10):
                ids.append(client.submit("noop").id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=submit_some) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(ids)) == 160
    for task_id in ids[:20]:
        assert client.handle(task_id).result(timeout=30) is None
