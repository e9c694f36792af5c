"""Pushing leases to worker streams: sessions and the dispatcher.

A `Session` is one open LeaseTasks stream: what it takes, its free capacity,
the leases it holds, and an outbox of messages to send. The `Dispatcher` of a
server process fills free capacity as soon as work may be ready:
- a local submit or a Redis notification marks a (queue, type) as maybe-ready;
- an outcome frees capacity on its session;
- a safety sweep (every `sweep_interval`) re-checks everything, in case a
  notification was lost; it is not on the hot path.
A lease attempt that returns fewer tasks than asked clears the maybe-ready mark,
unless a notification arrived meanwhile (generation counters). A task type
held back by its dispatch rate is marked again when its next token is due
(`throttled`: a timer, not a poll).

A lease counts as delivered once the worker names it (in a heartbeat, an
outcome or a release). A stream that does not read cannot: its leases would
expire one attempt after another, dead-lettering work nobody ran. So a lease
still unnamed `confirm_window` seconds after it was pushed (two heartbeat
intervals) is handed back, without using up a retry, and its stream gets no
more leases until the worker sends a message again. When a stream closes with
leases it never named (the worker was killed as they were pushed), they are
handed back `reconnect_grace` seconds later, unless the worker reconnected to
this server and named them; a worker that names them on another server later
finds them revoked, and the task runs again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from dtq import metrics
from dtq.app.leasing import Leasing
from dtq.domain.errors import DtqError
from dtq.domain.model import Lease, LeaseRef, Subscription, Task, WorkerInfo

log = logging.getLogger(__name__)
MAX_GRANT = 256  # most leases granted to one stream in one step
MAX_ROUND = 1024  # most leases granted by one call (one Redis script, one commit)
# Least time between two dispatch rounds. Under load, submissions arrive one
# by one and each would start a round granting one task (a Redis call and a
# PostgreSQL write per task); rounds this far apart grant what arrived
# meanwhile together. Idle, a round starts at once.
MIN_ROUND_GAP = 0.002


@dataclass(frozen=True, slots=True)
class Held:
    """A lease a session holds: where it lives and how long it lasts."""

    queue: str
    token: str
    seconds: float


@dataclass(slots=True)
class Push:
    """One message to a worker."""

    leases: list[Lease] = field(default_factory=list)
    acks: list[tuple[uuid.UUID, Task | DtqError]] = field(default_factory=list)
    revoked: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (task id, reason)
    draining: bool = False


_ids = itertools.count(1)


@dataclass(eq=False)
class Session:
    """One open lease stream of one worker. `sub` names its tenant's queues
    (`tenant_queue` names)."""

    worker_id: str
    sub: Subscription
    capacity: int
    held: dict[uuid.UUID, Held] = field(default_factory=dict)
    # Leases whose outcome is being recorded: the worker's slot is free already
    # (it sent the outcome), so they take no capacity, but they are still
    # the worker's (a heartbeat that names one is not told it is lost).
    finishing: dict[uuid.UUID, Held] = field(default_factory=dict)
    outbox: asyncio.Queue[Push | None] = field(default_factory=asyncio.Queue)
    draining: bool = False
    closed: bool = False
    # Leases pushed that the worker has not named yet: task id -> when pushed
    # (event loop time). A session whose leases went unnamed is `stalled`.
    unconfirmed: dict[uuid.UUID, float] = field(default_factory=dict)
    stalled: bool = False
    goodbye: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    # The worker's registration, re-written on every heartbeat so that the
    # registry heals itself if Redis loses it.
    info: WorkerInfo | None = None
    tenant: str = "default"
    touching: asyncio.Task[None] | None = None  # the registry write a heartbeat started

    @property
    def free(self) -> int:
        if self.draining or self.closed or self.stalled:
            return 0
        return max(0, self.capacity - len(self.held))

    def refs(self) -> list[LeaseRef]:
        return [LeaseRef(tid, h.token) for tid, h in self.held.items()]

    def deliver(self, leases: Sequence[Lease], now: float) -> None:
        for lease in leases:
            self.held[lease.task.id] = Held(
                lease.task.tenant_queue, lease.token, lease.task.lease_duration
            )
            self.unconfirmed[lease.task.id] = now
        if leases:
            self.outbox.put_nowait(Push(leases=list(leases)))

    def end(self, goodbye: bool) -> None:
        """The worker stopped writing: lease nothing more to it (a grant still
        in flight goes back at once, see `Dispatcher._deliver`); the stream ends
        once what is queued for it has been sent. `goodbye`: its last message
        said so (a worker shutting down names the leases it keeps in it)."""
        self.closed = True
        self.goodbye = goodbye
        self.outbox.put_nowait(None)

    def finish(self, task_ids: Sequence[uuid.UUID]) -> None:
        """Outcomes of these leases arrived: their slots are free while they are
        recorded (`finished` once they are, `unfinish` if they are not)."""
        for task_id in task_ids:
            held = self.drop(task_id)
            if held is not None:
                self.finishing[task_id] = held

    def finished(self, task_ids: Sequence[uuid.UUID]) -> None:
        for task_id in task_ids:
            self.finishing.pop(task_id, None)

    def unfinish(self, task_ids: Sequence[uuid.UUID]) -> None:
        """Not recorded: the worker sends the outcomes again; the leases are held."""
        for task_id in task_ids:
            held = self.finishing.pop(task_id, None)
            if held is not None:
                self.held[task_id] = held

    def holds(self, task_id: uuid.UUID) -> Held | None:
        return self.held.get(task_id) or self.finishing.get(task_id)

    def drop(self, task_id: uuid.UUID) -> Held | None:
        """The lease of `task_id` ended (outcome, release, loss)."""
        self.unconfirmed.pop(task_id, None)
        return self.held.pop(task_id, None)

    def unread(self, before: float) -> list[LeaseRef]:
        """Take back the leases pushed before `before` that the worker never named."""
        late = [tid for tid, pushed in self.unconfirmed.items() if pushed < before]
        refs = []
        for task_id in late:
            held = self.drop(task_id)
            if held is not None:
                refs.append(LeaseRef(task_id, held.token))
        if refs:
            self.stalled = True
            self.outbox.put_nowait(Push(revoked=[(r.task_id, "lease_lost") for r in refs]))
        return refs

    def revoke(self, task_id: uuid.UUID, reason: str) -> bool:
        if self.drop(task_id) is None:
            return False
        self.outbox.put_nowait(Push(revoked=[(task_id, reason)]))
        return True


class Dispatcher:
    """Fills the free capacity of this process's sessions with leases."""

    def __init__(
        self,
        leasing: Leasing,
        sweep_interval: float = 1.0,
        confirm_window: float = 20.0,
        reconnect_grace: float = 5.0,
    ) -> None:
        self.leasing = leasing
        self.sweep_interval = sweep_interval
        self.confirm_window = confirm_window
        self.reconnect_grace = reconnect_grace
        self._closed: list[tuple[float, Session]] = []  # (closed at, session) with unnamed leases
        self._next_check = 0.0
        self.sessions: dict[int, Session] = {}
        self._maybe: dict[tuple[str, str], int] = {}  # (queue, type) -> generation
        self._generation = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_round = 0.0
        self._turn = 0
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    # -- events -------------------------------------------------------------

    def attach(self, session: Session) -> None:
        self.sessions[session.id] = session
        self._mark_all(session)
        self._wake.set()
        self._gauge()

    def detach(self, session: Session) -> None:
        session.closed = True
        self.sessions.pop(session.id, None)
        if session.unconfirmed:
            self._closed.append((asyncio.get_running_loop().time(), session))
        self._gauge()

    def _gauge(self) -> None:
        metrics.worker_streams.set(len(self.sessions))
        metrics.stream_slots.labels("capacity").set(sum(s.capacity for s in self.sessions.values()))
        metrics.stream_slots.labels("held").set(sum(len(s.held) for s in self.sessions.values()))

    def notify(self, queue: str, task_type: str) -> None:
        """Work may be ready in (queue, type); "*" means any type."""
        if task_type == "*":
            for s in self.sessions.values():
                for t in s.sub.task_types:
                    self._maybe[(queue, t)] = next(self._generation)
        else:
            self._maybe[(queue, task_type)] = next(self._generation)
        self._wake.set()

    def throttled(self, queue: str, task_types: Sequence[str], wait: float) -> None:
        """Ready tasks of these rated types wait for a token due in `wait` s:
        look again then (one timer per type; an earlier one is kept)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + wait
        for task_type in task_types:
            key = (queue, task_type)
            timer = self._timers.get(key)
            if timer is not None and not timer.cancelled() and timer.when() <= when:
                continue
            if timer is not None:
                timer.cancel()
            self._timers[key] = loop.call_at(when, self._refilled, queue, task_type)

    def _refilled(self, queue: str, task_type: str) -> None:
        self._timers.pop((queue, task_type), None)
        self.notify(queue, task_type)

    def freed(self, session: Session) -> None:
        """A session got capacity back."""
        if session.free:
            self._wake.set()

    def sweep(self) -> None:
        for s in self.sessions.values():
            self._mark_all(s)
        self._wake.set()

    def cancel(self, worker_id: str, task_id: uuid.UUID) -> None:
        for s in self.sessions.values():
            if s.worker_id == worker_id and s.revoke(task_id, "cancelled"):
                self.freed(s)

    def drain_all(self) -> None:
        """Stop granting; tell every worker the server is going away."""
        for s in self.sessions.values():
            s.draining = True
            s.outbox.put_nowait(Push(draining=True))

    def _mark_all(self, session: Session) -> None:
        for q in session.sub.queues:
            for t in session.sub.task_types:
                self._maybe[(q, t)] = next(self._generation)

    # -- loop ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.sweep_interval)
            except TimeoutError:
                self.sweep()
            loop = asyncio.get_running_loop()
            wait = self._last_round + MIN_ROUND_GAP - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_round = loop.time()
            self._wake.clear()
            self._gauge()
            try:
                if self._last_round >= self._next_check:
                    self._next_check = self._last_round + self.sweep_interval
                    await self.take_back_unread(loop.time())
                more = await self.round()
            except asyncio.CancelledError:
                raise
            except DtqError as error:
                log.warning("dispatch_failed", extra={"reason": error.reason})
                await asyncio.sleep(0.2)
                continue
            except Exception:
                log.exception("dispatch_crashed")
                await asyncio.sleep(0.2)
                continue
            if more:
                self._wake.set()

    async def round(self) -> bool:
        """One dispatch round (the loop runs them): lease for every session that
        has room and may have work; True when some session got all it asked for
        (there may be more)."""
        hungry = [s for s in self.sessions.values() if s.free and self._wants(s)]
        if not hungry:
            return False
        # Streams that take the same work are filled one after another: once one
        # comes back short, the queue is empty for the others too (200 idle
        # workers cost one Redis call per sweep, not 200).
        alike: dict[Subscription, list[Session]] = defaultdict(list)
        for s in hungry:
            alike[s.sub].append(s)
        results = await asyncio.gather(
            *(self._fill_alike(group) for group in alike.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DtqError):
                log.error("fill_failed", exc_info=result)
        return any(r is True for r in results)

    async def _fill_alike(self, sessions: list[Session]) -> bool:
        """Fill streams that take the same work with one grant per queue: one
        Redis call and one commit, however many streams. Streams beyond
        MAX_ROUND leases wait for the next round, which starts at once (the
        order rotates, so every stream gets its turn)."""
        sub = sessions[0].sub
        self._turn = (self._turn + 1) % len(sessions)
        sessions = sessions[self._turn :] + sessions[: self._turn]
        full = False
        for queue in sub.queues:
            wanted = [t for t in sub.task_types if (queue, t) in self._maybe]
            asks: list[tuple[Session, int]] = []
            room = MAX_ROUND
            for session in sessions:
                n = min(session.free, MAX_GRANT, room)
                if n > 0:
                    asks.append((session, n))
                    room -= n
            if not wanted or not asks:
                continue
            seen = {t: self._maybe[(queue, t)] for t in wanted}
            grants = await self.leasing.grant_many(
                Subscription((queue,), tuple(wanted)), queue, [(s.worker_id, n) for s, n in asks]
            )
            for (session, _), leases in zip(asks, grants, strict=True):
                await self._deliver(session, leases)
            if sum(map(len, grants)) < sum(n for _, n in asks):
                for t, gen in seen.items():
                    if self._maybe.get((queue, t)) == gen:
                        del self._maybe[(queue, t)]
            else:
                full = True
        return full

    async def take_back_unread(self, now: float) -> None:
        """Hand back the leases of streams that do not read (see the module doc);
        `now` is event loop time."""
        before = now - self.confirm_window
        for session in list(self.sessions.values()):
            refs = session.unread(before)
            if not refs:
                continue
            log.warning("leases_unread", extra={"worker_id": session.worker_id, "tasks": len(refs)})
            with contextlib.suppress(DtqError):  # else they expire, as before
                await self.leasing.release(refs, revoked=True)
        await self._take_back_closed(now)

    async def _take_back_closed(self, now: float) -> None:
        due = [s for closed_at, s in self._closed if closed_at + self.reconnect_grace <= now]
        self._closed = [(t, s) for t, s in self._closed if t + self.reconnect_grace > now]
        await self._take_back_unnamed(due)

    async def said_goodbye(self, session: Session) -> None:
        """A worker that closed its stream itself named every lease it keeps
        first: the unnamed ones never reached it (or it handed them back
        unstarted), so they go back now, not after the reconnect grace."""
        self._closed = [(t, s) for t, s in self._closed if s is not session]
        await self._take_back_unnamed([session])

    async def _take_back_unnamed(self, sessions: list[Session]) -> None:
        adopted = {(tid, h.token) for s in self.sessions.values() for tid, h in s.held.items()}
        refs = [
            LeaseRef(tid, held.token)
            for session in sessions
            for tid in session.unconfirmed
            if (held := session.held.get(tid)) and (tid, held.token) not in adopted
        ]
        if not refs:
            return
        log.warning("leases_of_closed_stream", extra={"tasks": len(refs)})
        with contextlib.suppress(DtqError):  # else they expire
            await self.leasing.release(refs, revoked=True)

    async def _deliver(self, session: Session, leases: list[Lease]) -> None:
        if not session.closed:
            session.deliver(leases, asyncio.get_running_loop().time())
            return
        # The worker left while we leased: give the tasks back at once (if that
        # fails, the leases expire and are reclaimed).
        if leases:
            with contextlib.suppress(DtqError):
                await self.leasing.release([LeaseRef(x.task.id, x.token) for x in leases])

    def _wants(self, session: Session) -> bool:
        return any(
            (q, t) in self._maybe for q in session.sub.queues for t in session.sub.task_types
        )
