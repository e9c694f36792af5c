"""Child tasks without I/O: the server's validation of children (keys scoped
to the parent), the worker's keys (`#N` or the caller's), the context without
a spawner, and GetTask's family in protos and in `dtq task get`."""

from __future__ import annotations

import uuid

import pytest

from dtq.api import convert_flows
from dtq.cli import output
from dtq.client import Submission
from dtq.domain import flows
from dtq.domain.errors import DtqError
from dtq.domain.model import Family, TaskState
from dtq.domain.validation import Limits, SubmitSpec
from dtq.v1 import task_pb2, task_service_pb2
from dtq.worker.app import TaskContext
from dtq.worker.children import Results, requests_for

PARENT = uuid.UUID("01a22029-0000-7000-8000-000000000001")


def spec(**fields: object) -> SubmitSpec:
    return SubmitSpec(**{"type": "child", "payload": b"", "idempotency_key": "#0", **fields})  # type: ignore[arg-type]


def test_children_keys_are_scoped_to_their_parent() -> None:
    (child,) = flows.children(PARENT, [spec()], Limits(), 0.0, "acme")
    assert child.idempotency_key == f"{PARENT}/#0"
    assert (child.tenant, child.after) == ("acme", None)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"after": str(PARENT)}, "children[0].after"),
        ({"idempotency_key": ""}, "children[0].idempotency_key"),
        ({"max_retries": 1000}, "children[0].max_retries"),
    ],
)
def test_a_child_needs_a_key_and_no_after(fields: dict[str, object], path: str) -> None:
    with pytest.raises(DtqError) as caught:
        flows.children(PARENT, [spec(**fields)], Limits(), 0.0, "default")
    assert caught.value.violations[0].field == path


def test_between_one_and_a_thousand_children() -> None:
    for count in (0, 1001):
        with pytest.raises(DtqError) as caught:
            flows.children(PARENT, [spec()] * count, Limits(), 0.0, "default")
        assert caught.value.violations[0].field == "children"


def test_the_worker_keys_children_by_their_order_or_the_callers_key() -> None:
    counter = iter(range(100))
    built = requests_for(
        [Submission("a"), Submission("b", idempotency_key="mine"), Submission("c")],
        lambda: next(counter),
    )
    assert [r.idempotency_key for r in built] == ["#0", "mine", "#2"]
    with pytest.raises(ValueError):
        requests_for([Submission("a", after=str(PARENT))], lambda: 0)


class Recording:
    """A spawner that answers every child as stored, and keeps the requests."""

    def __init__(self) -> None:
        self.sent: list[task_service_pb2.SubmitTaskRequest] = []

    def submit(self, requests: list[task_service_pb2.SubmitTaskRequest]) -> Results:
        self.sent += requests
        return [
            task_service_pb2.SubmitTaskResponse(task=task_pb2.Task(id=f"id-{len(self.sent)}"))
            for _ in requests
        ]

    async def asubmit(self, requests: list[task_service_pb2.SubmitTaskRequest]) -> Results:
        return self.submit(requests)


def test_each_context_counts_its_children_from_zero() -> None:
    for _ in range(2):  # two attempts: the same keys
        spawner = Recording()
        ctx = TaskContext("t", "parent", "default", 1, 3, 30.0, spawner=spawner)
        ctx.submit("a", {"n": 1}, queue="io")
        ctx.submit_many([Submission("b"), Submission("c")])
        assert [r.idempotency_key for r in spawner.sent] == ["#0", "#1", "#2"]
        assert spawner.sent[0].queue == "io"


def test_a_context_outside_a_worker_cannot_submit() -> None:
    with pytest.raises(RuntimeError):
        TaskContext("t", "parent", "default", 1, 3, 30.0).submit("a")


def family() -> Family:
    group = uuid.uuid4()
    return Family(
        {TaskState.RUNNING: 2, TaskState.COMPLETED: 10},
        [uuid.UUID(int=i) for i in range(10)],
        group,
        5,
        3,
        {TaskState.COMPLETED: 2, TaskState.DEAD_LETTERED: 1, TaskState.PENDING: 2},
    )


def test_the_family_in_the_task_message() -> None:
    msg = task_pb2.Task(id="x")
    found = family()
    convert_flows.family(msg, found)
    assert msg.family.child_count == 12
    assert [(c.state, c.count) for c in msg.family.children_by_state] == [
        (task_pb2.Task.STATE_RUNNING, 2),
        (task_pb2.Task.STATE_COMPLETED, 10),
    ]
    assert len(msg.family.child_ids) == 10
    g = msg.group_progress
    assert (g.group_id, g.total, g.done) == (str(found.group_id), 5, 3)


def test_task_get_prints_children_and_group_progress() -> None:
    msg = task_pb2.Task(id="x", parent_id="p", root_id="r")
    convert_flows.family(msg, family())
    rows = dict(output._family_rows(msg))
    assert rows["children"] == "12 (2 running, 10 completed)"
    assert rows["first children"].endswith("(and 2 more)")
    assert rows["group progress"] == "3/5 done (2 pending, 2 completed, 1 dead_lettered)"
    plain = task_pb2.Task(id="y")
    assert dict(output._family_rows(plain)) == {}
