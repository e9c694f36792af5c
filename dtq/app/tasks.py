"""Use cases of TaskService: submit, read, list, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from dtq import metrics
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.redis_notify import RedisNotifier
from dtq.app import task_metrics
from dtq.domain import paging, validation
from dtq.domain.errors import DtqError, OutcomeUnknown
from dtq.domain.model import LeaseRef, Page, Submitted, Task, TaskFilter, TaskState
from dtq.domain.states import TERMINAL
from dtq.domain.validation import Limits, SubmitSpec
from dtq.ports import Clock, DispatchQueue, Ready, TaskStore

log = logging.getLogger(__name__)

# How often a watch re-reads the task even without a notification (pub/sub
# may drop messages while Redis reconnects).
WATCH_RECHECK = 2.0
# Most accepted-but-unindexed tasks a server keeps to retry itself.
MAX_DEFERRED = 100_000


def ready_of(task: Task) -> Ready:
    return Ready(task.id, task.queue, task.type, task.priority)


@dataclass
class Tasks:
    """Submitting and managing tasks. PostgreSQL first, then the Redis index."""

    store: TaskStore
    queue: DispatchQueue
    clock: Clock
    limits: Limits
    notifier: RedisNotifier | None = None
    # Called for each (queue, type) made ready: wakes this process's
    # dispatcher without waiting for the pub/sub echo.
    on_ready: list[Callable[[str, str], None]] = field(default_factory=list)
    deferred: dict[uuid.UUID, Ready] = field(default_factory=dict)

    async def submit(self, specs: Sequence[SubmitSpec], batch: bool = False) -> list[Submitted]:
        """Validate, commit to PostgreSQL, then index in Redis.

        The reply waits for the commit, never for Redis: when Redis is down the
        tasks are accepted anyway and the queue manager indexes them later."""
        if batch:
            validation.batch_size(len(specs))
        now = self.clock.now()
        new = []
        for i, spec in enumerate(specs):
            try:
                new.append(validation.new_task(spec, self.limits, now))
            except DtqError as error:
                raise error.prefixed(f"requests[{i}]") if batch else error from None
        try:
            submitted = await self.store.insert(new, now)
        except OutcomeUnknown as error:
            # The insert may have committed: index the tasks anyway, or a committed
            # one would wait for the reconciler. An id that was never stored is
            # dropped at its first lease (PostgreSQL has no such task to move).
            self._defer([Ready(t.id, t.queue, t.type, t.priority) for t in new
                         if not t.scheduled_at], error)  # fmt: skip
            raise
        fresh = [s.task for s in submitted if not s.deduplicated]
        task_metrics.submitted(fresh)
        dups = [s.task for s in submitted if s.deduplicated]
        for dup in dups:
            metrics.tasks_deduplicated.labels(dup.queue).inc()
        # A repeat of a request whose first answer was lost (a retry after a
        # timeout) may find its task committed but never indexed: index ready
        # ones again. NX in Redis leaves one already indexed where it is.
        await self._index(fresh + [t for t in dups if t.state == TaskState.PENDING])
        return submitted

    def __post_init__(self) -> None:
        # Concurrent submissions share one Redis call, as they share one commit.
        self._indexing = GroupCommit[list[Ready], None](self._index_flush, max_inflight=1)

    async def _index_flush(self, calls: list[list[Ready]]) -> list[BaseException | None]:
        ready = [r for call in calls for r in call]
        try:
            await self.queue.enqueue(ready)
        except DtqError as error:
            self._defer(ready, error)
        else:
            self._woken(ready)
        return [None] * len(calls)

    async def _index(self, fresh: Sequence[Task]) -> None:
        ready = [ready_of(t) for t in fresh if t.state == TaskState.PENDING]
        later = [t.scheduled_at for t in fresh if t.state == TaskState.SCHEDULED and t.scheduled_at]
        if ready:
            await self._indexing(ready)
        if later:
            with contextlib.suppress(DtqError):  # the scheduler re-reads within 1 s anyway
                await self.queue.wake_scheduler(min(later))

    def _woken(self, ready: Sequence[Ready]) -> None:
        for queue, task_type in {(r.queue, r.type) for r in ready}:
            for callback in self.on_ready:
                callback(queue, task_type)

    def _defer(self, ready: Sequence[Ready], error: DtqError) -> None:
        """Committed but not indexed (Redis down): retried by `flush_deferred`;
        past the cap, the manager's reconciler indexes them when Redis is back."""
        room = MAX_DEFERRED - len(self.deferred)
        self.deferred.update({r.id: r for r in ready[: max(room, 0)]})
        metrics.index_deferred.set(len(self.deferred))
        log.warning("index_deferred", extra={"tasks": len(ready), "reason": error.reason})

    async def flush_deferred(self) -> int:
        """Index tasks accepted while Redis was unreachable; returns how many."""
        if not self.deferred:
            return 0
        batch = list(self.deferred.values())
        await self.queue.enqueue(batch)
        for r in batch:
            self.deferred.pop(r.id, None)
        metrics.index_deferred.set(len(self.deferred))
        self._woken(batch)
        log.info("index_caught_up", extra={"tasks": len(batch)})
        return len(batch)

    async def get(self, task_id: uuid.UUID, full: bool = True) -> Task:
        task = await self.store.get(task_id, with_payload=full)
        if task is None:
            raise DtqError.not_found("task", str(task_id))
        return task

    async def list(self, filters: TaskFilter, page_size: int, token: str, full: bool) -> Page:
        size = validation.page_size(page_size, default=50)
        fp = paging.fingerprint(filters.state, filters.type, filters.queue)
        last = paging.decode(token, fp)
        try:
            before = uuid.UUID(last) if last else None
        except ValueError:  # well-formed, but not made by us: a forged or corrupted token
            raise DtqError.invalid("page_token", "is not a token this API issued") from None
        items = await self.store.list_tasks(filters, before, size + 1, full)
        more = len(items) > size
        items = items[:size]
        next_token = paging.encode(str(items[-1].id), fp) if more else ""
        return Page(items, next_token)

    async def cancel(self, task_id: uuid.UUID) -> Task:
        task, was, token = await self.store.cancel(task_id, self.clock.now())
        log.info("task_cancelled", extra={"task_id": str(task_id), "was": was.value})
        with contextlib.suppress(DtqError):  # the index heals itself; the cancel is committed
            if was == TaskState.PENDING:
                await self.queue.remove_ready(task)
            elif was == TaskState.RUNNING and token:
                await self.queue.drop_leases(task.queue, [LeaseRef(task.id, token)])
                await self.queue.publish_cancel(task)
            await self.queue.publish_changes([task])
        return task

    async def retry(self, task_id: uuid.UUID) -> Task:
        task = await self.store.retry(task_id, self.clock.now())
        log.info("task_requeued", extra={"task_id": str(task_id)})
        task_metrics.retried([task], "operator")
        await self._index([task])
        with contextlib.suppress(DtqError):
            await self.queue.publish_changes([task])
        return task

    async def watch(self, task_id: uuid.UUID) -> AsyncIterator[Task]:
        """The task now, then after each change of state, until terminal."""
        if self.notifier is None:
            raise DtqError.unavailable("redis", "watching needs the notifier")
        async with self.notifier.watch(task_id) as changes:
            task = await self.get(task_id)
            yield task
            while task.state not in TERMINAL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), WATCH_RECHECK)
                latest = await self.get(task_id)
                if (latest.state, latest.attempts) != (task.state, task.attempts):
                    yield latest
                task = latest
