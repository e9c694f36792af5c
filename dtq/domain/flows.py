"""Validating flows: a group of tasks and its callback (a chord), child tasks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

from dtq.domain import validation
from dtq.domain.errors import DtqError
from dtq.domain.ids import uuid7
from dtq.domain.model import NewTask
from dtq.domain.validation import Limits, SubmitSpec, new_task

MAX_GROUP = 10_000  # tasks in one group


def group(
    specs: Sequence[SubmitSpec], callback: SubmitSpec, limits: Limits, now: float, tenant: str
) -> tuple[list[NewTask], NewTask]:
    """The group's new tasks and its callback, which names the group."""
    if not specs:
        raise DtqError.invalid("tasks", "must hold at least one task")
    if len(specs) > MAX_GROUP:
        raise DtqError.invalid("tasks", f"must hold at most {MAX_GROUP} tasks")
    group_id = uuid7(now)
    members = []
    for i, spec in enumerate(specs):
        _plain(spec, f"tasks[{i}]")
        try:
            task = new_task(spec, limits, now)
        except DtqError as error:
            raise error.prefixed(f"tasks[{i}]") from None
        members.append(replace(task, tenant=tenant, group_id=group_id))
    _plain(callback, "callback")
    try:
        last = new_task(callback, limits, now)
    except DtqError as error:
        raise error.prefixed("callback") from None
    return members, replace(last, tenant=tenant, callback_of=group_id)


def _plain(spec: SubmitSpec, path: str) -> None:
    """No chain, idempotency key or uniqueness inside a group (one transaction)."""
    for name, value in (
        ("after", spec.after),
        ("idempotency_key", spec.idempotency_key),
        ("unique_for", spec.unique_for),
    ):
        if value:
            raise DtqError.invalid(f"{path}.{name}", "cannot be set on a task of a group")


def children(
    parent: uuid.UUID, specs: Sequence[SubmitSpec], limits: Limits, now: float, tenant: str
) -> list[NewTask]:
    """A running task's new children. Each needs an idempotency key, stored
    scoped to the parent (`{parent}/{key}`): a retried parent that submits
    the same children again gets the first ones back."""
    validation.batch_size(len(specs), "children")
    new = []
    for i, spec in enumerate(specs):
        path = f"children[{i}]"
        if spec.after:
            raise DtqError.invalid(f"{path}.after", "cannot be set on a child task")
        if not spec.idempotency_key:
            raise DtqError.invalid(f"{path}.idempotency_key", "is required for a child task")
        try:
            task = new_task(spec, limits, now)
        except DtqError as error:
            raise error.prefixed(path) from None
        key = f"{parent}/{spec.idempotency_key}"
        new.append(replace(task, tenant=tenant, idempotency_key=key))
    return new
