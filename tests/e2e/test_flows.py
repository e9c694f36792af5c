"""Flows against real processes: chains (`then`) and groups with a callback
(`Client.group`), with the handlers of tests/support/flow_handlers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtq import Client
from dtq.client import NotFound, Submission, TaskCancelled, TaskFailed, TaskState
from tests.conftest import Server, WorkerFactory
from tests.support.procs import Proc

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(server.address) as c:
        yield c


@pytest.fixture
def worker(start_worker: WorkerFactory) -> Proc:
    return start_worker("-m", "tests.support.flow_handlers", "--concurrency", "16")


def test_a_chain_of_three_passes_each_result_to_the_next(client: Client, worker: Proc) -> None:
    a = client.submit("flow_add", {"start": 10, "n": 1})
    b = a.then("flow_add", {"n": 2})
    c = b.then("flow_add", {"n": 3})
    assert c.state == TaskState.WAITING
    assert c.task.parent_id == b.id
    assert c.result(timeout=30) == {"total": 16, "parent_id": b.id}
    assert b.result(timeout=5) == {"total": 13, "parent_id": a.id}
    assert a.result(timeout=5) == {"total": 11, "parent_id": ""}
    assert [h.refresh().attempts for h in (a, b, c)] == [1, 1, 1]


def test_a_dead_lettered_step_cancels_the_rest_with_a_reason(client, worker) -> None:
    a = client.submit("flow_add", {"n": 1})
    b = a.then("flow_fail", {"error": "step two broke"})
    c = b.then("flow_add", {"n": 3})
    d = c.then("flow_add", {"n": 4})
    with pytest.raises(TaskFailed):
        b.result(timeout=30)
    for step in (c, d):
        with pytest.raises(TaskCancelled):
            step.result(timeout=30)
        info = step.refresh()
        assert info.state == TaskState.CANCELLED
        assert info.error is not None and info.error.type == "ParentNotCompleted"
        assert b.id in info.error.message and "dead_lettered" in info.error.message
        assert info.attempts == 0
    assert a.refresh().state == TaskState.COMPLETED


def test_then_on_a_finished_task_moves_on_at_once(client, worker) -> None:
    a = client.submit("flow_add", {"start": 1, "n": 1})
    a.result(timeout=30)
    b = a.then("flow_add", {"n": 5})
    assert b.state == TaskState.SCHEDULED
    assert b.result(timeout=30)["total"] == 7
    failed = client.submit("flow_fail", {})
    with pytest.raises(TaskFailed):
        failed.result(timeout=30)
    late = failed.then("flow_add", {"n": 1})
    assert late.state == TaskState.CANCELLED


def test_cancelling_a_waiting_step_cancels_what_waits_for_it(client: Client) -> None:
    a = client.submit("flow_add", {"n": 1}, delay=3600)  # no worker needed
    b = a.then("flow_add", {"n": 2})
    c = b.then("flow_add", {"n": 3})
    b.cancel()
    info = c.refresh()
    assert info.state == TaskState.CANCELLED
    assert info.error is not None and b.id in info.error.message
    assert a.refresh().state == TaskState.SCHEDULED
    a.cancel()


def test_then_needs_a_parent_that_exists(client: Client) -> None:
    with pytest.raises(NotFound):
        client.submit("flow_add", {"n": 1}, after="0190a6a8-0000-7000-8000-000000000000")


def test_a_group_of_200_fires_its_callback_once_with_every_outcome(client, worker) -> None:
    failing = [7, 99, 150]
    tasks = [Submission("flow_square", {"x": x, "fail": failing}) for x in range(200)]
    group = client.group(tasks, Submission("flow_collect", {}))
    assert group.callback.state == TaskState.WAITING
    assert len(group.tasks) == 200
    summary = group.callback.result(timeout=120)
    assert summary["count"] == 200
    assert summary["states"] == {"completed": 197, "dead_lettered": 3}
    assert summary["sum"] == sum(x * x for x in range(200) if x not in failing)
    assert summary["errors"] == sorted(f"no square for {x}" for x in failing)
    assert summary["ids"] == [t.id for t in group.tasks]  # submission order
    assert summary["group_id"] == group.id
    callback = group.callback.refresh()
    assert callback.attempts == 1 and callback.group_id == group.id
    assert all(t.refresh().group_id == group.id for t in group.tasks[:3])


def test_a_group_callback_counts_a_cancelled_task_as_finished(client, worker) -> None:
    group = client.group(
        [Submission("flow_square", {"x": 3}), Submission("flow_square", {"x": 4}, delay=3600)],
        Submission("flow_collect", {}),
    )
    group.tasks[0].result(timeout=30)
    assert group.callback.refresh().state == TaskState.WAITING
    group.tasks[1].cancel()
    summary = group.callback.result(timeout=30)
    assert summary["states"] == {"completed": 1, "cancelled": 1}
    assert summary["sum"] == 9
