"""Protos of flows that GetTask and SubmitChildTasks add: a task's family
(children by state, first ids), its group's progress, a request's children."""

from __future__ import annotations

from dtq.api.convert import STATE_TO_PB, submit_spec, task_id
from dtq.domain.ids import lease_ref
from dtq.domain.model import Family, LeaseRef, TaskState
from dtq.domain.validation import SubmitSpec
from dtq.v1 import task_pb2, worker_service_pb2


def _counts(by_state: dict[TaskState, int]) -> list[task_pb2.StateCount]:
    return [
        task_pb2.StateCount(state=STATE_TO_PB[state], count=n)
        for state, n in sorted(by_state.items(), key=lambda item: STATE_TO_PB[item[0]])
    ]


def family(msg: task_pb2.Task, found: Family) -> None:
    """Fill `msg.family` and, for a task of a group, `msg.group_progress`."""
    # Left unset for a task without children, so a leaf reads as before (REST omits it).
    count = sum(found.children_by_state.values())
    if count:
        msg.family.child_count = count
        msg.family.children_by_state.extend(_counts(found.children_by_state))
        msg.family.child_ids.extend(str(i) for i in found.child_ids)
    if found.group_id is not None:
        progress = msg.group_progress
        progress.group_id = str(found.group_id)
        progress.total, progress.done = found.group_total, found.group_done
        progress.by_state.extend(_counts(found.group_by_state))


def children(
    req: worker_service_pb2.SubmitChildTasksRequest, trace_context: dict[str, str] | None
) -> tuple[LeaseRef, list[SubmitSpec]]:
    """The parent's lease and the children's specs."""
    task_id(req.parent_id, "parent_id")
    parent = lease_ref(req.parent_id, req.lease_token)
    return parent, [submit_spec(child, trace_context) for child in req.children]
