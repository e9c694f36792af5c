"""Handles of submitted tasks: the last known state, and a way to wait for the result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, Unpack

from dtq.client.models import TaskInfo, TaskState, outcome
from dtq.client.requests import SubmitOptions

C = TypeVar("C")
# A dead-lettered task may be retried by an operator: only these end for good.
FINAL = frozenset({TaskState.COMPLETED, TaskState.CANCELLED})


class Tasks(Protocol):
    """What a `TaskHandle` needs of its `Client`."""

    def get(self, task_id: str) -> TaskInfo: ...
    def cancel(self, task_id: str) -> TaskInfo: ...
    def retry(self, task_id: str) -> TaskInfo: ...
    def watch(self, task_id: str, timeout: float | None = None) -> Iterator[TaskInfo]: ...
    def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> TaskHandle: ...


class AsyncTasks(Protocol):
    """What an `AsyncTaskHandle` needs of its `AsyncClient`."""

    async def get(self, task_id: str) -> TaskInfo: ...
    async def cancel(self, task_id: str) -> TaskInfo: ...
    async def retry(self, task_id: str) -> TaskInfo: ...
    def watch(self, task_id: str, timeout: float | None = None) -> AsyncIterator[TaskInfo]: ...
    async def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> AsyncTaskHandle: ...


class _Handle(Generic[C]):
    def __init__(self, client: C, task: TaskInfo, deduplicated: bool = False) -> None:
        self.client = client
        self.task = task
        # True when an earlier submission with the same idempotency key was returned.
        self.deduplicated = deduplicated

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}>"

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def state(self) -> TaskState:
        """The state when the handle last heard of the task (see `refresh`)."""
        return self.task.state


class TaskHandle(_Handle[Tasks]):
    """A submitted task: its id, its last known state (`task`, `state`), and a
    way to wait for its result."""

    def refresh(self) -> TaskInfo:
        """Read the task again (GetTask) and remember it."""
        self.task = self.client.get(self.id)
        return self.task

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to finish (WatchTask, no polling) and return its result.

        Raises `TaskFailed` (dead-lettered: the remote error's type, message and
        traceback), `TaskCancelled`, or `TimeoutError` after `timeout` seconds.
        """
        if self.task.state not in FINAL:
            for task in self.client.watch(self.id, timeout=timeout):
                self.task = task
        return outcome(self.task)

    def then(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> TaskHandle:
        """Submit the next step of a chain: a task that waits (state `waiting`)
        until this one completes, then runs with this one's result as
        `ctx.parent_result`. When this one is dead-lettered or cancelled, the
        step (and the rest of the chain) is cancelled, its error saying why.
        Returns the step's handle, so `submit(a).then(b).then(c)` chains on."""
        options["after"] = self.id
        return self.client.submit(type, payload, **options)

    def cancel(self) -> TaskInfo:
        """Cancel the task (see `Client.cancel`)."""
        self.task = self.client.cancel(self.id)
        return self.task

    def retry(self) -> TaskInfo:
        """Run a failed or dead-lettered task again (see `Client.retry`)."""
        self.task = self.client.retry(self.id)
        return self.task


class AsyncTaskHandle(_Handle[AsyncTasks]):
    """A submitted task; `await handle.result()` waits for it (see `TaskHandle`)."""

    async def refresh(self) -> TaskInfo:
        """Read the task again (GetTask) and remember it."""
        self.task = await self.client.get(self.id)
        return self.task

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (as TaskHandle)
        """Wait for the task to finish and return its result (see `TaskHandle.result`)."""
        if self.task.state not in FINAL:
            async for task in self.client.watch(self.id, timeout=timeout):
                self.task = task
        return outcome(self.task)

    async def then(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> AsyncTaskHandle:
        """The next step of a chain (see `TaskHandle.then`)."""
        options["after"] = self.id
        return await self.client.submit(type, payload, **options)

    async def cancel(self) -> TaskInfo:
        """Cancel the task (see `AsyncClient.cancel`)."""
        self.task = await self.client.cancel(self.id)
        return self.task

    async def retry(self) -> TaskInfo:
        """Run a failed or dead-lettered task again (see `AsyncClient.retry`)."""
        self.task = await self.client.retry(self.id)
        return self.task


H = TypeVar("H")


@dataclass(frozen=True)
class Group(Generic[H]):
    """A submitted group (`Client.group`): its id, its tasks' handles and its
    callback's, whose `result()` waits for the whole group."""

    id: str
    tasks: list[H]
    callback: H
