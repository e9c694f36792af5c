"""Use cases of TaskService: submit, read, list, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from dtq import metrics
from dtq.app import caller, task_metrics
from dtq.app.limits import Quotas
from dtq.app.queue_cap import QueueCap
from dtq.app.tenants import TenantBook
from dtq.domain import flows, paging, validation
from dtq.domain.auth import queue_required
from dtq.domain.errors import Code, DtqError, OutcomeUnknown
from dtq.domain.model import (
    Family,
    LeaseRef,
    NewTask,
    Page,
    Submitted,
    Task,
    TaskFilter,
    TaskState,
)
from dtq.domain.states import TERMINAL
from dtq.domain.validation import Limits, SubmitSpec
from dtq.ports import Clock, DispatchQueue, Ready, TaskStore, TaskWatches

log = logging.getLogger(__name__)

# How often a watch re-reads the task even without a notification (pub/sub
# may drop messages while Redis reconnects).
WATCH_RECHECK = 2.0
# Tasks read at a time for a page with payloads and results.
FULL_CHUNK = 16
# Most accepted-but-unindexed tasks a server keeps to retry itself.
MAX_DEFERRED = 100_000
# Redis calls in flight at once for the descendants a cancel took along.
CANCEL_CHUNK = 100


@dataclass
class Tasks:
    """Submitting and managing tasks. PostgreSQL first, then the Redis index."""

    store: TaskStore
    queue: DispatchQueue
    clock: Clock
    limits: Limits
    watches: TaskWatches | None = None
    # Called for each (queue, type) made ready: wakes this process's
    # dispatcher without waiting for the pub/sub echo.
    on_ready: list[Callable[[str, str], None]] = field(default_factory=list)
    deferred: dict[uuid.UUID, Ready] = field(default_factory=dict)
    watching: dict[str, int] = field(default_factory=dict)  # open watches per caller
    queue_cap: QueueCap | None = None
    quotas: Quotas | None = None
    tenants: TenantBook | None = None  # None: no check that the caller's tenant exists

    async def submit(self, specs: Sequence[SubmitSpec], batch: bool = False) -> list[Submitted]:
        """Validate, commit to PostgreSQL, then index in Redis.

        The reply waits for the commit, never for Redis: when Redis is down the
        tasks are accepted anyway and the queue manager indexes them later."""
        if batch:
            validation.batch_size(len(specs))
        now = self.clock.now()
        tenant = caller.current().home
        new = []
        for i, spec in enumerate(specs):
            try:
                new.append(replace(validation.new_task(spec, self.limits, now), tenant=tenant))
                caller.check_queue(new[-1].queue)
            except DtqError as error:
                raise error.prefixed(f"requests[{i}]") if batch else error from None
        await self._admit(tenant, new)
        for parent in {t.after for t in new if t.after}:
            await self.get(parent, full=False)  # NOT_FOUND unless the caller sees it
        try:
            submitted = await self.store.insert(new, now)
        except OutcomeUnknown as error:
            # The insert may have committed: index the tasks anyway, or a committed
            # one would wait for the reconciler. An id that was never stored is
            # dropped at its first lease (PostgreSQL has no such task to move).
            self._defer([Ready.of(t) for t in new if not t.scheduled_at], error)
            raise
        fresh = [s.task for s in submitted if not s.deduplicated]
        task_metrics.submitted(fresh)
        dups = [s.task for s in submitted if s.deduplicated]
        for dup in dups:
            metrics.tasks_deduplicated.labels(metrics.queue_label(dup.queue)).inc()
        # A repeat of a request whose first answer was lost (a retry after a
        # timeout) may find its task committed but never indexed: index ready
        # ones again. NX in Redis leaves one already indexed where it is.
        await self._index(fresh + [t for t in dups if t.state == TaskState.PENDING])
        return submitted

    async def _admit(self, tenant: str, new: Sequence[NewTask]) -> None:
        if self.tenants is not None:
            await self.tenants.require(tenant)
        if self.queue_cap is not None:
            await self.queue_cap.check(t.tenant_queue for t in new)
        if self.quotas is not None:
            await self.quotas.check(tenant, len(new))

    async def submit_group(
        self, specs: Sequence[SubmitSpec], callback: SubmitSpec
    ) -> tuple[builtins.list[Task], Task]:
        """A group and its callback, released once every task of the group is
        terminal (see dtq/adapters/pg_flows.py). All or nothing."""
        now = self.clock.now()
        tenant = caller.current().home
        members, last = flows.group(specs, callback, self.limits, now, tenant)
        for t in [*members, last]:
            caller.check_queue(t.queue)
        await self._admit(tenant, [*members, last])
        tasks, waiting = await self.store.insert_group(members, last, now)
        task_metrics.submitted([*tasks, waiting])
        await self._index(tasks)
        return tasks, waiting

    async def submit_children(
        self, parent: LeaseRef, specs: Sequence[SubmitSpec]
    ) -> builtins.list[Submitted]:
        """Children of a task running under `parent` (its lease), in the
        caller's tenant (the parent's: another tenant's parent is NOT_FOUND),
        deduplicated per parent (see `flows.children`)."""
        now = self.clock.now()
        tenant = caller.current().home
        new = flows.children(parent.task_id, specs, self.limits, now, tenant)
        for i, t in enumerate(new):
            try:
                caller.check_queue(t.queue)
            except DtqError as error:
                raise error.prefixed(f"children[{i}]") from None
        await self._admit(tenant, new)
        submitted = await self.store.insert_children(parent, tenant, new, now)
        fresh = [s.task for s in submitted if not s.deduplicated]
        task_metrics.submitted(fresh)
        dups = [s.task for s in submitted if s.deduplicated]
        await self._index(fresh + [t for t in dups if t.state == TaskState.PENDING])
        return submitted

    async def _index(self, fresh: Sequence[Task]) -> None:
        ready = [Ready.of(t) for t in fresh if t.state == TaskState.PENDING]
        later = [t.scheduled_at for t in fresh if t.state == TaskState.SCHEDULED and t.scheduled_at]
        if ready:
            try:
                await self.queue.enqueue(ready)
            except DtqError as error:
                self._defer(ready, error)
            else:
                self._woken(ready)
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
        if task is None or not caller.may_see(task.tenant, task.queue):
            # Another tenant's, or another's queue: not even there.
            raise DtqError.not_found("task", str(task_id))
        return task

    async def get_with_family(self, task_id: uuid.UUID) -> tuple[Task, Family]:
        """GetTask's FULL view: the task, its children and its group's progress."""
        task = await self.get(task_id, full=True)
        queues = sorted(caller.current().queues) or None  # a caller limited to queues
        return task, await self.store.family(task, queues)

    async def _mine(self, task_id: uuid.UUID) -> None:
        """NOT_FOUND unless the caller may see the task (its tenant and queue)."""
        if not caller.sees_everything():
            await self.get(task_id, full=False)

    async def list(self, filters: TaskFilter, page_size: int, token: str, full: bool) -> Page:
        size = validation.page_size(page_size, default=50)
        validation.point_in_time(filters.created_after, "created_after")
        validation.point_in_time(filters.created_before, "created_before")
        if caller.current().queues and not filters.queue:
            raise queue_required(caller.current())
        if filters.queue:
            caller.check_queue(filters.queue)
        filters = replace(filters, tenant=caller.current().view)
        tree = [filters.parent_id, filters.root_id] if filters.parent_id or filters.root_id else []
        # The newer filters count only when set: tokens issued before them stay valid.
        newer = [filters.created_after, filters.created_before, filters.idempotency_key]
        if all(f is None for f in newer):
            newer = []
        fp = paging.fingerprint(filters.state, filters.type, filters.queue, *tree, *newer)
        last = paging.decode(token, fp)
        try:
            before = uuid.UUID(last) if last else None
        except ValueError:  # well-formed, but not made by us: a forged or corrupted token
            raise DtqError.invalid("page_token", "is not a token this API issued") from None
        if full:
            items, more = await self._full_page(filters, before, size)
        else:
            items = await self.store.list_tasks(filters, before, size + 1, full)
            more = len(items) > size
            items = items[:size]
        next_token = paging.encode(str(items[-1].id), fp) if more else ""
        return Page(items, next_token)

    async def _full_page(
        self, filters: TaskFilter, before: uuid.UUID | None, size: int
    ) -> tuple[builtins.list[Task], bool]:
        """Tasks with payloads and results, read FULL_CHUNK at a time until the
        page holds `size` or about half a message's worth of bytes (a page of
        1,000 tasks near the payload limit would take gigabytes to build)."""
        budget = validation.message_limit(self.limits.max_payload_bytes) // 2
        items: builtins.list[Task] = []
        used = 0
        while True:
            wanted = min(FULL_CHUNK, size + 1 - len(items))  # one past the page: is there more?
            chunk = await self.store.list_tasks(filters, before, wanted, True)
            for task in chunk:
                if len(items) == size or (items and used >= budget):
                    return items, True
                items.append(task)
                used += len(task.payload or b"") + len(task.result or b"")
            if len(chunk) < wanted:
                return items, False
            before = chunk[-1].id

    async def cancel(self, task_id: uuid.UUID) -> Task:
        await self._mine(task_id)
        cancelled = await self.store.cancel(task_id, self.clock.now())
        log.info(
            "task_cancelled",
            extra={
                "task_id": str(task_id),
                "was": cancelled.was.value,
                "descendants": len(cancelled.descendants),
            },
        )
        every = [cancelled, *cancelled.descendants]
        with contextlib.suppress(DtqError):  # the index heals itself; the cancel is committed
            running = [c for c in every if c.was == TaskState.RUNNING and c.token]
            for i in range(0, len(running), CANCEL_CHUNK):  # tell their workers first
                chunk = running[i : i + CANCEL_CHUNK]
                await asyncio.gather(*(self._stop_running(c.task, c.token) for c in chunk))
            pending = [c.task for c in every if c.was == TaskState.PENDING]
            for i in range(0, len(pending), CANCEL_CHUNK):
                await asyncio.gather(
                    *(self.queue.remove_ready(t) for t in pending[i : i + CANCEL_CHUNK])
                )
            await self.queue.publish_changes([c.task for c in every])
        return cancelled.task

    async def _stop_running(self, task: Task, token: str | None) -> None:
        assert token is not None
        await self.queue.drop_leases(task.tenant_queue, [LeaseRef(task.id, token)])
        await self.queue.publish_cancel(task)

    async def retry(self, task_id: uuid.UUID) -> Task:
        await self._mine(task_id)
        task = await self.store.retry(task_id, self.clock.now())
        log.info("task_requeued", extra={"task_id": str(task_id)})
        task_metrics.retried([task], "operator")
        await self._index([task])
        with contextlib.suppress(DtqError):
            await self.queue.publish_changes([task])
        return task

    async def watch(self, task_id: uuid.UUID) -> AsyncIterator[Task]:
        """The task now, then after each change of state, until terminal."""
        if self.watches is None:
            raise DtqError.unavailable("redis", "watching needs the notifier")
        who = caller.current().subject
        if self.watching.get(who, 0) >= self.limits.max_watches:
            raise DtqError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_WATCHES",
                f"at most {self.limits.max_watches} open watches per caller",
                retry_after=1.0,
            )
        self.watching[who] = self.watching.get(who, 0) + 1
        try:
            async for task in self._watch(task_id):
                yield task
        finally:
            self.watching[who] -= 1
            if not self.watching[who]:
                del self.watching[who]

    async def _watch(self, task_id: uuid.UUID) -> AsyncIterator[Task]:
        assert self.watches is not None
        async with self.watches.watch(task_id) as changes:
            task = await self.get(task_id)
            yield task
            while task.state not in TERMINAL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), WATCH_RECHECK)
                latest = await self.get(task_id)
                if (latest.state, latest.attempts) != (task.state, task.attempts):
                    yield latest
                task = latest
