"""Flows against real processes: chains (`then`), groups with a callback
(`Client.group`) and child tasks (`ctx.submit`: dedup on retry, trees,
the cancel cascade, `dtq task get`, REST through Envoy), with the handlers
of tests/support/flow_handlers.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from dtq import Client
from dtq.client import NotFound, Submission, TaskCancelled, TaskFailed, TaskState
from tests.conftest import Server, WorkerFactory
from tests.e2e.test_cli import dtq, dtq_json
from tests.e2e.test_rest import Rest
from tests.support.envoy import running_envoy
from tests.support.procs import Proc, wait_until

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


# -- child tasks (ctx.submit) -----------------------------------------------------------


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    wait_until(check, seconds, what)


def test_a_retried_parent_gets_its_children_back_not_new_ones(client, worker) -> None:
    parent = client.submit("flow_spawn", {"n": 3, "fail_first": True}, max_retries=2)
    result = parent.result(timeout=60)
    assert parent.refresh().attempts == 2
    assert result["deduplicated"] == [True, True, True]  # the first attempt's children
    children = list(client.list(parent_id=parent.id))
    assert sorted(c.id for c in children) == sorted(result["children"])
    for child in children:
        assert (child.parent_id, child.root_id) == (parent.id, parent.id)
        assert child.idempotency_key == f"{parent.id}/#{result['children'].index(child.id)}"
    squares = sorted(client.get(c).result for c in result["children"] if _done(client, c))
    assert squares == [0.0, 1.0, 4.0]
    assert parent.refresh().root_id == ""


def _done(client: Client, task_id: str) -> bool:
    wait_for(lambda: client.get(task_id).state == TaskState.COMPLETED, 30, "a child")
    return True


def test_a_tree_of_children_has_one_root(client, worker) -> None:
    top = client.submit("flow_spawn", {"n": 2, "depth": 3})
    top.result(timeout=60)
    wait_for(lambda: len(list(client.list(root_id=top.id))) == 2 + 4 + 8, 60, "the tree")
    tree = list(client.list(root_id=top.id))
    assert {t.root_id for t in tree} == {top.id}
    leaves = [t for t in tree if t.type == "flow_square"]
    assert len(leaves) == 8 and all(t.parent_id not in (top.id, "") for t in leaves)
    assert len(list(client.list(parent_id=top.id))) == 2


def test_async_handlers_and_process_pools_submit_children(client, start_worker) -> None:
    start_worker("-m", "tests.support.flow_handlers", "--pool", "process", "--concurrency", "2")
    for kind in ("flow_spawn", "flow_spawn_async"):
        parent = client.submit(kind, {"n": 2})
        parent.result(timeout=60)
        children = list(client.list(parent_id=parent.id))
        assert len(children) == 2 and {c.root_id for c in children} == {parent.id}
    assert client.submit("flow_spawn_bad", {}).result(timeout=60) == REFUSED


REFUSED = {"error": "InvalidArgument", "reason": "INVALID_FIELD", "fields": ["children[0].type"]}


def test_a_refused_child_raises_a_typed_error_in_the_handler(client, worker) -> None:
    assert client.submit("flow_spawn_bad", {}).result(timeout=60) == REFUSED


def test_cancelling_a_parent_cancels_its_children_running_or_not(client, worker) -> None:
    parent = client.submit("flow_spawn_sleepers", {})
    wait_for(lambda: _states(client, parent.id).count(TaskState.RUNNING) == 3, 30, "children")
    (middle,) = [c for c in client.list(parent_id=parent.id) if c.type.endswith("_once")]
    wait_for(lambda: _states(client, middle.id) == [TaskState.RUNNING], 30, "a grandchild")
    client.cancel(parent.id)
    tree = list(client.list(root_id=parent.id))
    assert len(tree) == 5 and {t.state for t in tree} == {TaskState.CANCELLED}
    assert {t.error.type for t in tree if t.error} == {"ParentCancelled"}
    # The running ones were interrupted on the worker: their slots are free again.
    assert client.submit("flow_square", {"x": 5}).result(timeout=30) == 25


def _states(client: Client, parent_id: str) -> list[TaskState]:
    return [c.state for c in client.list(parent_id=parent_id)]


def test_task_get_shows_parent_root_children_and_group_progress(server, client, worker) -> None:
    parent = client.submit("flow_spawn", {"n": 12})
    ids = parent.result(timeout=60)["children"]
    shown = dtq(server, "task", "get", parent.id)
    assert shown.returncode == 0, shown.stderr
    assert "12 (" in shown.stdout, shown.stdout
    assert ids[0] in shown.stdout and "(and 2 more)" in shown.stdout
    child = dtq(server, "task", "get", ids[0])
    for label in ("parent", "root", "idempotency key"):
        assert re.search(rf"{label}\s+{parent.id}", child.stdout), child.stdout
    group = client.group(
        [Submission("flow_square", {"x": x}) for x in range(3)], Submission("flow_collect", {})
    )
    group.callback.result(timeout=60)
    shown = dtq(server, "task", "get", group.callback.id)
    assert "3/3 done (3 completed)" in shown.stdout, shown.stdout
    data = dtq_json(server, "task", "get", group.tasks[0].id)
    progress = data["task"]["group_progress"]
    assert (progress["total"], progress["done"], progress["group_id"]) == (3, 3, group.id)


def test_rest_shows_the_family_and_filters_by_parent(server, client, worker) -> None:
    parent = client.submit("flow_spawn", {"n": 3})
    ids = parent.result(timeout=60)["children"]
    with running_envoy(server.address) as envoy:
        rest = Rest(envoy.port)
        got = rest.ok("GET", f"/api/v1/tasks/{parent.id}")["task"]
        assert got["family"]["child_count"] == 3
        assert got["family"]["child_ids"] == ids
        listed = rest.ok("GET", "/api/v1/tasks", parent_id=parent.id)["tasks"]
        assert sorted(t["id"] for t in listed) == sorted(ids)
        listed = rest.ok("GET", "/api/v1/tasks", rootId=parent.id)["tasks"]
        assert {t["root_id"] for t in listed} == {parent.id}
        basic = rest.ok("GET", f"/api/v1/tasks/{parent.id}", view="TASK_VIEW_BASIC")["task"]
        assert "family" not in basic or not basic["family"].get("child_ids")
