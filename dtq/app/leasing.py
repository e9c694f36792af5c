"""Use cases of leases: grant, report outcomes, extend, reclaim expired.

Order of writes, chosen so that a crash between any two steps loses nothing:
- grant: Redis pops the task and records a provisional lease (one script),
  then PostgreSQL moves it PENDING -> RUNNING. A crash in between leaves a
  lease that expires; the reaper finds the task still PENDING and re-indexes it.
- outcome: PostgreSQL first (compare-and-set on the lease token), then the
  Redis lease is dropped. A crash in between leaves a lease that expires; the
  reaper's compare-and-set then fails harmlessly.
- expiry: Redis hands each expired lease to exactly one reaper, then
  PostgreSQL moves the task on (compare-and-set on the token).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dtq import metrics, tracing
from dtq.app import caller, task_metrics
from dtq.domain.errors import STALE_LEASE, DtqError, OutcomeUnknown
from dtq.domain.limits import NO_SHARE, Share
from dtq.domain.model import Lease, LeaseRef, Outcome, Subscription, Task, TaskError, TaskState
from dtq.domain.retry import RetryPolicy, exhausted
from dtq.ports import Clock, DispatchQueue, Grant, Ready, Resolution, TaskStore

log = logging.getLogger(__name__)


def deal(sizes: Sequence[int], k: int) -> list[int]:
    """Owners of k items dealt out in turn to takers wanting `sizes` each
    (k <= sum(sizes)): item i goes to taker `deal(...)[i]`."""
    owner: list[int] = []
    left = list(sizes)
    while len(owner) < k:
        for i, wants in enumerate(left):
            if wants and len(owner) < k:
                owner.append(i)
                left[i] -= 1
    return owner


def stale(task_id: uuid.UUID) -> DtqError:
    return DtqError.failed_precondition(
        STALE_LEASE,
        f"the lease on task {task_id} is not current: "
        "it expired, was revoked, or the task finished",
    )


@dataclass
class Leasing:
    """Grants leases and records what workers report."""

    store: TaskStore
    queue: DispatchQueue
    clock: Clock
    retry_policy: RetryPolicy
    default_lease: float = 30.0
    # The dispatch rates of a queue's task types: type -> (per second, burst).
    rates_of: Callable[[str], Mapping[str, tuple[float, int]]] = lambda queue: {}
    # The running caps and key weights of a queue's tenant (`tenant_queue` name).
    share_of: Callable[[str], Share] = lambda queue: NO_SHARE
    # Called with (queue, rated types, seconds) when ready tasks of a rated
    # type wait for a token: when to try again.
    on_throttled: list[Callable[[str, Sequence[str], float], None]] = field(default_factory=list)

    async def grant_many(
        self, sub: Subscription, queue: str, asks: Sequence[tuple[str, int]]
    ) -> list[list[Lease]]:
        """Lease ready tasks of `queue` to several workers that take the same work,
        up to n each for (worker id, n) in `asks`: one Redis call and one
        PostgreSQL commit for all of them. Tasks are dealt out in turn, so each
        worker gets its share of the most urgent ones."""
        total = sum(n for _, n in asks)
        raw = secrets.token_bytes(16 * total)
        tokens = [raw[i : i + 16].hex() for i in range(0, len(raw), 16)]
        popped, redis_now = await self._pop(sub, queue, tokens)
        out: list[list[Lease]] = [[] for _ in asks]
        if not popped:
            return out
        owner = deal([n for _, n in asks], len(popped))
        grants = [Grant(r.id, tokens[i], asks[owner[i]][0]) for i, r in enumerate(popped)]
        try:
            leased = await self.store.lease(grants, self.clock.now())
        except OutcomeUnknown:
            # Maybe recorded: keep the provisional Redis leases. When they expire,
            # the reaper moves each task on by what PostgreSQL holds (RUNNING under
            # this token: expired; still PENDING: indexed again).
            raise
        except DtqError:
            # Not recorded: give the tasks back now rather than at lease expiry.
            await self.queue.drop_leases(queue, [LeaseRef(g.task_id, g.token) for g in grants])
            await self.queue.enqueue(popped)
            raise
        token_of = {g.task_id: (g.token, owner[i]) for i, g in enumerate(grants)}
        moved = {t.id for t in leased}
        stray = [LeaseRef(g.task_id, g.token) for g in grants if g.task_id not in moved]
        if stray:  # cancelled or already running elsewhere: nothing to run
            await self.queue.drop_leases(queue, stray)
        odd = [
            (LeaseRef(t.id, token_of[t.id][0]), redis_now + t.lease_duration)
            for t in leased
            if t.lease_duration != self.default_lease
        ]
        await self.queue.set_deadlines(queue, odd)
        await self.queue.publish_changes(leased)
        metrics.leases_granted.labels(metrics.queue_label(queue)).inc(len(leased))
        task_metrics.leased(leased)
        for t in leased:
            token, who = token_of[t.id]
            out[who].append(Lease(t, token, redis_now + t.lease_duration))
        return out

    async def _pop(
        self, sub: Subscription, queue: str, tokens: Sequence[str]
    ) -> tuple[list[Ready], float]:
        rates = self.rates_of(queue)
        rated = {t: rates[t] for t in sub.task_types if t in rates}
        share = self.share_of(queue)
        if not rated and share == NO_SHARE:
            return await self.queue.lease(queue, sub.task_types, tokens, self.default_lease)
        popped, redis_now, wait = await self.queue.lease_rated(
            queue, sub.task_types, tokens, self.default_lease, rated, share
        )
        if wait > 0:
            metrics.dispatch_throttled.labels(metrics.queue_label(queue)).inc()
            for callback in self.on_throttled:
                callback(queue, list(rated), wait)
        return popped, redis_now

    async def report_one(self, outcome: Outcome) -> Task:
        """A unary CompleteTask or FailTask: NOT_FOUND for a task the caller
        may not see (another tenant's), as if it did not exist."""
        if not caller.sees_everything():
            task = await self.store.get(outcome.task_id, with_payload=False)
            if task is None or not caller.may_see(task.tenant, task.queue):
                raise DtqError.not_found("task", str(outcome.task_id))
        (recorded,) = await self.report([outcome])
        if isinstance(recorded, DtqError):
            raise recorded
        return recorded

    async def report(self, outcomes: Sequence[Outcome]) -> list[Task | DtqError]:
        """Record outcomes; each gets its task or a STALE_LEASE error."""
        started = tracing.now_ns()
        now = self.clock.now()
        ok = [o for o in outcomes if o.succeeded]
        bad = [o for o in outcomes if not o.succeeded]
        done = await self.store.complete(
            [(LeaseRef(o.task_id, o.token), o.result) for o in ok], now
        )
        failed = await self.store.fail(
            [(LeaseRef(o.task_id, o.token), o.error or TaskError("")) for o in bad],
            self._after_failure,
            now,
        )
        # By (task, token): a stale outcome must not take the answer of a current
        # one for the same task.
        recorded: dict[tuple[uuid.UUID, str], Task] = {}
        for outcome, task in [*zip(ok, done, strict=True), *zip(bad, failed, strict=True)]:
            if task is not None:
                recorded[(outcome.task_id, outcome.token)] = task
        await self._settle(outcomes, recorded)
        task_metrics.finished(recorded.values())
        tracing.outcomes_recorded(recorded.values(), started)
        # An outcome refused for its lease is a task that ran twice (or a forgery).
        metrics.stale_outcomes.inc(len(outcomes) - len(recorded))
        return [recorded.get((o.task_id, o.token)) or stale(o.task_id) for o in outcomes]

    async def _settle(
        self, outcomes: Sequence[Outcome], recorded: dict[tuple[uuid.UUID, str], Task]
    ) -> None:
        """Redis side of recorded outcomes: drop leases, count, publish."""
        by_queue: dict[str, list[LeaseRef]] = defaultdict(list)
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in outcomes:
            task = recorded.get((o.task_id, o.token))
            if task is None:
                continue
            by_queue[task.tenant_queue].append(LeaseRef(o.task_id, o.token))
            counts[task.tenant_queue][0 if task.state == TaskState.COMPLETED else 1] += 1
        finished = {q: (refs, counts[q][0], counts[q][1]) for q, refs in by_queue.items()}
        try:
            await self.queue.settle(finished, list(recorded.values()))
            retries = [t.scheduled_at for t in recorded.values() if t.state == TaskState.FAILED]
            if retries:
                await self.queue.wake_scheduler(min(s for s in retries if s is not None))
        except DtqError as error:  # recorded in PostgreSQL; leases expire harmlessly
            log.warning("settle_deferred", extra={"reason": error.reason})

    def _after_failure(self, task: Task, error: TaskError) -> Resolution:
        if error.permanent or exhausted(task.attempts, task.max_retries):
            return Resolution(TaskState.DEAD_LETTERED)
        delay = self.retry_policy.delay(task.attempts)
        return Resolution(TaskState.FAILED, self.clock.now() + delay)

    @staticmethod
    def _after_expiry(task: Task, _: TaskError) -> Resolution:
        if exhausted(task.attempts, task.max_retries):
            return Resolution(TaskState.DEAD_LETTERED)
        return Resolution(TaskState.PENDING)

    async def extend(
        self, queue: str, refs: Sequence[tuple[LeaseRef, float]]
    ) -> list[float | None]:
        """Extend held leases of one queue; None where a lease is lost.

        A lease missing from Redis while PostgreSQL still shows the task RUNNING
        under the same token (Redis lost its data) is re-created, not revoked:
        PostgreSQL is the truth, and revoking would make the task run twice."""
        deadlines = await self.queue.extend(queue, refs)
        missing = [(ref, s) for (ref, s), d in zip(refs, deadlines, strict=True) if d is None]
        if not missing:
            return deadlines
        current = {t.id: t for t in await self.store.get_many([r.task_id for r, _ in missing])}
        now = await self.queue.now()
        revived = {
            ref: (now + seconds, t.fairness_key)
            for ref, seconds in missing
            if (t := current.get(ref.task_id))
            and t.state == TaskState.RUNNING
            and t.lease_token == ref.token
        }
        if revived:
            await self.queue.restore_leases([(queue, r, d, k) for r, (d, k) in revived.items()])
            log.warning("leases_restored", extra={"queue": queue, "count": len(revived)})
        return [
            d if d is not None else (revived[ref][0] if ref in revived else None)
            for (ref, _), d in zip(refs, deadlines, strict=True)
        ]

    async def extend_one(self, ref: LeaseRef, seconds: float | None) -> float:
        """ExtendLease for clients without a stream: checks the token in PostgreSQL."""
        task = await self.store.get(ref.task_id, with_payload=False)
        if task is None or not caller.may_see(task.tenant, task.queue):
            raise DtqError.not_found("task", str(ref.task_id))
        if task.state != TaskState.RUNNING or task.lease_token != ref.token:
            raise stale(ref.task_id)
        extension = [(ref, seconds or task.lease_duration)]
        (deadline,) = await self.queue.extend(task.tenant_queue, extension)
        if deadline is None:
            raise stale(ref.task_id)
        return deadline

    async def release(self, refs: Sequence[LeaseRef], revoked: bool = False) -> list[Task]:
        """Take back leases a worker gives up unfinished (it is shutting down),
        or, `revoked`, leases the server takes back (never named by the worker):
        the tasks are PENDING again at once and the attempt does not count.

        PostgreSQL first (compare-and-set on the token), then Redis: re-index,
        then drop the lease. A crash in between leaves a lease that expires;
        the reaper then finds the task PENDING and re-indexes it."""
        released = await self.store.release(refs, self.clock.now(), revoked)
        if not released:
            return []
        moved = {t.id for t in released}
        by_queue: dict[str, list[LeaseRef]] = defaultdict(list)
        queue_of = {t.id: t.tenant_queue for t in released}
        for ref in refs:
            if ref.task_id in moved:
                by_queue[queue_of[ref.task_id]].append(ref)
        await self.queue.enqueue([Ready.of(t) for t in released])
        for queue, dropped in by_queue.items():
            await self.queue.drop_leases(queue, dropped)
        await self.queue.publish_changes(released)
        for task in released:
            log.info("lease_released", extra={"task_id": str(task.id), "worker_id": task.worker_id})
        return released

    async def reap(self, queue: str, limit: int = 1000) -> tuple[int, int]:
        """Hand tasks of expired leases back (or dead-letter them). Returns
        (leases claimed, running tasks whose lease really expired)."""
        started = tracing.now_ns()
        claimed = await self.queue.claim_expired(queue, limit)
        if not claimed:
            return 0, 0
        moved, orphans = await self.store.expire(claimed, self._after_expiry, self.clock.now())
        back = [t for t in moved if t.state == TaskState.PENDING] + orphans
        await self.queue.enqueue([Ready.of(t) for t in back])
        await self.queue.publish_changes(moved)
        task_metrics.expired(moved)
        tracing.outcomes_recorded(moved, started)
        for task in moved:
            log.warning(
                "lease_expired",
                extra={"task_id": str(task.id), "attempts": task.attempts, "now": task.state.value},
            )
        return len(claimed), len(moved)
