"""Use cases of the worker lease stream: open, outcomes, heartbeats, close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from dtq.app import caller
from dtq.app.dispatch import Dispatcher, Held, Push, Session
from dtq.app.leasing import Leasing
from dtq.app.presence import Presence
from dtq.domain import validation
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import LeaseRef, Outcome, Subscription, TaskState, WorkerInfo
from dtq.domain.tenants import split_tenant_queue, tenant_queue
from dtq.ports import Clock, TaskStore, WorkerRegistry

log = logging.getLogger(__name__)
LEASE_LOST = "lease_lost"


@dataclass
class Streams:
    """What happens on a LeaseTasks stream, message by message."""

    leasing: Leasing
    dispatcher: Dispatcher
    registry: WorkerRegistry
    store: TaskStore
    clock: Clock
    presence: Presence | None = None  # keeps BUSY and LAST SEEN of the registry current
    # Refuses a worker id the registry does not know once too many were seen
    # (Admin.room_for: the cap RegisterWorker applies, for streams opened directly).
    room_for: Callable[[str, float, str], Awaitable[None]] | None = None

    def heard(self, session: Session) -> None:
        """The worker sent a message: it is alive, and reads again if it stalled."""
        if session.stalled:
            session.stalled = False
            self.dispatcher.freed(session)
        if self.presence is not None:
            self.presence.saw(session)

    async def open(
        self, worker_id: str, sub: Subscription, slots: int, held: Sequence[LeaseRef]
    ) -> Session:
        for queue in sub.queues:
            caller.check_queue(queue)
        tenant = caller.current().home  # a worker takes the work of one tenant
        sub = replace(sub, queues=tuple(tenant_queue(tenant, q) for q in sub.queues))
        worker_id = validation.worker_id(worker_id, "open.worker_id")
        session = Session(worker_id, sub, slots, tenant=tenant)
        session.info = await self._registration(session)
        if held:
            await self._adopt(session, held)
        await self._touch(session)
        self.dispatcher.attach(session)
        log.info(
            "stream_opened",
            extra={"worker_id": worker_id, "capacity": slots, "held": len(session.held)},
        )
        return session

    async def _adopt(self, session: Session, held: Sequence[LeaseRef]) -> None:
        """Keep the leases a reconnecting worker still holds, if still current."""
        tasks = {t.id: t for t in await self.store.get_many([r.task_id for r in held])}
        for ref in held:
            task = tasks.get(ref.task_id)
            if (
                task
                and task.tenant == session.tenant
                and task.state == TaskState.RUNNING
                and task.lease_token == ref.token
            ):
                session.held[ref.task_id] = Held(task.tenant_queue, ref.token, task.lease_duration)
            else:
                session.outbox.put_nowait(Push(revoked=[(ref.task_id, LEASE_LOST)]))
        await self.heartbeat(session, session.refs())

    async def on_outcomes(self, session: Session, outcomes: Sequence[Outcome]) -> None:
        """The worker's slots are free once it sends the outcomes, so the
        session's are freed before the commit: the next lease is granted while
        they are recorded, and a task waiting for a slot (another fairness
        key's, say) does not also wait for a commit it has no part in."""
        ids = [o.task_id for o in outcomes]
        session.finish(ids)
        self.dispatcher.freed(session)
        try:
            results = await self.leasing.report(outcomes)
        except BaseException:
            session.unfinish(ids)
            raise
        session.finished(ids)
        session.outbox.put_nowait(
            Push(acks=[(o.task_id, r) for o, r in zip(outcomes, results, strict=True)])
        )

    async def heartbeat(self, session: Session, refs: Sequence[LeaseRef]) -> None:
        """Extend each lease the session holds; revoke the ones that are lost."""
        lost: list[uuid.UUID] = []
        by_queue: dict[str, list[tuple[LeaseRef, float]]] = defaultdict(list)
        for ref in refs:
            held = session.holds(ref.task_id)
            if held is None or held.token != ref.token:
                lost.append(ref.task_id)
            else:
                session.unconfirmed.pop(ref.task_id, None)  # the worker has it
                by_queue[held.queue].append((ref, held.seconds))
        for queue, items in by_queue.items():
            deadlines = await self.leasing.extend(queue, items)
            lost += [ref.task_id for (ref, _), d in zip(items, deadlines, strict=True) if d is None]
        if lost:
            for task_id in lost:
                session.drop(task_id)
            session.outbox.put_nowait(Push(revoked=[(t, LEASE_LOST) for t in lost]))
            self.dispatcher.freed(session)
            log.warning("leases_lost", extra={"worker_id": session.worker_id, "tasks": len(lost)})
        self._touch_soon(session)

    def _touch_soon(self, session: Session) -> None:
        """The registry write of a heartbeat, off the stream's path (one at a
        time): a slow write (a Redis Cluster node failing over holds the
        worker index) must not hold up the heartbeats behind it, or the
        leases they extend expire."""
        if session.touching is None or session.touching.done():
            session.touching = asyncio.get_running_loop().create_task(self._touch(session))

    async def release(self, session: Session, refs: Sequence[LeaseRef]) -> None:
        """The worker gives leases back unfinished. Best effort: if PostgreSQL
        or Redis is unreachable the leases simply expire, as if never given back."""
        for ref in refs:
            held = session.held.get(ref.task_id)
            if held is not None and held.token == ref.token:
                session.drop(ref.task_id)
        self.dispatcher.freed(session)
        try:
            await self.leasing.release(refs)
        except DtqError as error:
            log.warning(
                "release_failed", extra={"worker_id": session.worker_id, "reason": error.reason}
            )

    def set_capacity(self, session: Session, slots: int) -> None:
        """0 drains the stream; a refused value changes nothing."""
        if slots:
            session.capacity = validation.capacity(slots)
        session.draining = slots == 0
        self.dispatcher.freed(session)

    async def close(self, session: Session) -> None:
        """The stream ended. Held leases stay valid until they expire: the
        worker may reconnect (to any server) and keep them."""
        self.dispatcher.detach(session)
        if session.goodbye:
            await self.dispatcher.said_goodbye(session)
        log.info("stream_closed", extra={"worker_id": session.worker_id, "held": len(session.held)})

    async def _registration(self, session: Session) -> WorkerInfo:
        now = self.clock.now()
        with contextlib.suppress(DtqError):
            known = await self.registry.get(session.worker_id, session.tenant)
            if known is not None:
                return known
        if self.room_for is not None:
            try:
                await self.room_for(session.worker_id, now, session.tenant)
            except DtqError as error:
                if error.code == Code.RESOURCE_EXHAUSTED:
                    raise
        sub = session.sub
        queues = tuple(split_tenant_queue(q)[1] for q in sub.queues)
        return WorkerInfo(
            session.worker_id,
            "",
            0,
            queues,
            sub.task_types,
            session.capacity,
            "",
            {},
            now,
            now,
            tenant=session.tenant,
        )

    async def _touch(self, session: Session) -> None:
        now = self.clock.now()
        with contextlib.suppress(DtqError):
            if session.info is None:
                await self.registry.touch(
                    session.worker_id, len(session.held), session.draining, now, session.tenant
                )
                return
            await self.registry.upsert(
                replace(
                    session.info,
                    active_tasks=len(session.held),
                    draining=session.draining,
                    last_seen_at=now,
                )
            )
