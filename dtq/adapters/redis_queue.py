"""DispatchQueue on Redis: the ready index, the leases, and the
notifications that push work to streams (keys in redis_keys.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dtq.adapters import redis_keys as keys
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.redis_conn import Batch, RedisCalls, in_pipeline
from dtq.domain.limits import NO_SHARE, Share
from dtq.domain.model import LeaseRef, Task
from dtq.ports import Ready


class RedisQueue:
    """Redis implementation of `DispatchQueue`."""

    def __init__(self, calls: RedisCalls, aging_seconds: float = 60.0) -> None:
        self.calls = self._call = calls  # shared with the other Redis adapters
        self.redis = calls.redis
        self._scripts = calls.scripts
        self.aging_us = int(aging_seconds * 1_000_000)
        self._enqueuing = GroupCommit[Sequence[Ready], None](self._enqueue_flush, max_inflight=1)

    async def ping(self) -> None:
        await self._call.ping()

    # -- ready index -----------------------------------------------------------

    async def enqueue(self, tasks: Sequence[Ready]) -> None:
        """Concurrent calls (submissions, mostly) share one pipeline, as they
        share one PostgreSQL commit; each call gets the pipeline's error."""
        if tasks:
            await self._enqueuing(tasks)

    async def _enqueue_flush(self, calls: list[Sequence[Ready]]) -> list[BaseException | None]:
        await self._enqueue_now([r for call in calls for r in call])
        return [None] * len(calls)

    async def _enqueue_now(self, tasks: Sequence[Ready]) -> None:
        by_queue: dict[str, list[Ready]] = defaultdict(list)
        for task in tasks:
            by_queue[task.queue].append(task)

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for queue, items in by_queue.items():
                keys_, args = self._enqueue_args(queue, items)
                await self._scripts["enqueue"](keys=keys_, args=args, client=in_pipeline(pipe))
            pipe.sadd(keys.QUEUES, *by_queue)
            await pipe.execute()

        await self._call(run)

    @staticmethod
    def _enqueue_args(queue: str, items: list[Ready]) -> tuple[list[str], list[Any]]:
        slot: dict[str, int] = {}
        lists: list[str] = []
        named: list[str] = []
        pairs: list[Any] = []
        for item in items:
            key = keys.ready(queue, item.type, item.priority, item.fairness_key)
            if key not in slot:
                slot[key] = len(slot) + 1
                lists += [key, keys.turns(queue, item.type, item.priority)]
                named += [item.type, item.fairness_key]
            pairs += [slot[key], item.id.bytes]
        return [keys.types(queue), *lists], [keys.notify_channel(queue), *named, *pairs]

    async def remove_ready(self, task: Task) -> None:
        queue = keys.queue_tag(task.tenant, task.queue)
        key = keys.ready(queue, task.type, task.priority, task.fairness_key)
        await self._call(lambda: self.redis.zrem(key, task.id.bytes))

    # -- leases -----------------------------------------------------------------

    async def lease(
        self, queue: str, task_types: Sequence[str], tokens: Sequence[str], lease_seconds: float
    ) -> tuple[list[Ready], float]:
        popped, now, _ = await self.lease_rated(queue, task_types, tokens, lease_seconds, {})
        return popped, now

    @staticmethod
    def _share_args(share: Share) -> list[Any]:
        args: list[Any] = [share.max_running, share.key_max_running, len(share.weights)]
        for key, weight in share.weights:
            args += [key, weight]
        return args

    async def lease_rated(
        self,
        queue: str,
        task_types: Sequence[str],
        tokens: Sequence[str],
        lease_seconds: float,
        rates: Mapping[str, tuple[float, int]],
        share: Share = NO_SHARE,
    ) -> tuple[list[Ready], float, float]:
        rated = [(i, t) for i, t in enumerate(task_types) if t in rates]
        args: list[Any] = [len(tokens), int(lease_seconds * 1000), self.aging_us]
        args += [len(task_types), *self._share_args(share), len(rated)]
        for i, t in rated:
            args += [i + 1, repr(float(rates[t][0])), int(rates[t][1])]
        args += [bytes.fromhex(t) for t in tokens]
        keys_ = keys.lease_keys(queue, task_types, [t for _, t in rated])
        out = await self._call(lambda: self._scripts["lease"](keys=keys_, args=args))
        popped = [
            Ready(uuid.UUID(bytes=member), queue, *keys.of_ready_key(task_types, int(index) - 1))
            for member, index in zip(out[2::2], out[3::2], strict=True)
        ]
        return popped, int(out[0]) / 1000, int(out[1]) / 1000

    async def set_deadlines(self, queue: str, refs: Sequence[tuple[LeaseRef, float]]) -> None:
        if refs:
            mapping = {keys.lease_member(r.task_id, r.token): int(d * 1000) for r, d in refs}
            await self._call(lambda: self.redis.zadd(keys.leases(queue), mapping, xx=True))

    async def extend(
        self, queue: str, refs: Sequence[tuple[LeaseRef, float]]
    ) -> list[float | None]:
        if not refs:
            return []
        args: list[Any] = []
        for ref, seconds in refs:
            args += [keys.lease_member(ref.task_id, ref.token), int(seconds * 1000)]
        out = await self._call(
            lambda: self._scripts["extend"](keys=[keys.leases(queue)], args=args)
        )
        return [int(d) / 1000 if int(d) else None for d in out]

    async def drop_leases(self, queue: str, refs: Sequence[LeaseRef]) -> None:
        if refs:
            await self._call(lambda: self._end_leases(queue, refs, self.redis))

    def _end_leases(self, queue: str, refs: Sequence[LeaseRef], client: Any) -> Any:
        """end_leases.lua on `client` (the connection, or a pipeline)."""
        members = [keys.lease_member(r.task_id, r.token) for r in refs]
        return self._scripts["end_leases"](
            keys=[keys.leases(queue), *keys.lease_counts(queue)],
            args=[keys.notify_channel(queue), *members],
            client=client,
        )

    async def claim_expired(self, queue: str, limit: int) -> list[LeaseRef]:
        out = await self._call(
            lambda: self._scripts["claim_expired"](
                keys=[keys.leases(queue), *keys.lease_counts(queue)],
                args=[limit, keys.notify_channel(queue)],
            )
        )
        return [LeaseRef(*keys.split_member(m)) for m in out]

    # -- leases recovered --------------------------------------------------------

    async def restore_leases(self, items: Sequence[tuple[str, LeaseRef, float, str]]) -> int:
        """Re-create leases of RUNNING tasks (queue, lease, deadline in Unix s,
        fairness key), counting them in the running counts."""
        if not items:
            return 0
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for queue, ref, deadline, key in items:
            member = keys.lease_member(ref.task_id, ref.token)
            by_queue[queue] += [member, int(deadline * 1000), key]

        async def run() -> int:
            pipe: Any = self.redis.pipeline(transaction=False)  # either client's
            for queue, args in by_queue.items():
                counts = [keys.holders(queue), keys.running(queue)]
                await self._scripts["restore_leases"](
                    keys=[keys.leases(queue), *counts], args=args, client=pipe
                )
                pipe.sadd(keys.QUEUES, queue)
            out = await pipe.execute()
            return sum(out[0::2])

        return await self._call(run)

    async def now(self) -> float:
        """Redis's clock (Unix s): the clock of lease deadlines."""
        seconds, micros = await self._call(self.redis.time)
        return float(seconds) + micros / 1e6

    # -- notifications ------------------------------------------------------------

    async def publish_changes(self, tasks: Sequence[Task]) -> None:
        if tasks:
            await self.settle({}, tasks)

    async def settle(
        self, finished: Mapping[str, tuple[Sequence[LeaseRef], int, int]], changed: Sequence[Task]
    ) -> None:
        bucket = int(time.time()) // keys.BUCKET_SECONDS

        async def run() -> None:
            batch = Batch(self.redis)
            pipe = batch.pipe
            for queue, (refs, completed, failed) in finished.items():
                if refs:
                    await self._end_leases(queue, refs, pipe)
                for kind, n in (("completed", completed), ("failed", failed)):
                    if n:
                        key = keys.counter(queue, kind, bucket)
                        pipe.incrby(key, n)
                        pipe.expire(key, 120)
            if changed:
                batch.publish(
                    keys.CHANGES_CHANNEL, keys.changes((t.id, t.state.value) for t in changed)
                )
            await batch.execute()

        await self._call(run)

    async def publish_cancel(self, task: Task) -> None:
        message = json.dumps({"worker_id": task.worker_id, "task_id": str(task.id)})
        await self._call(lambda: self.redis.publish(keys.CANCEL_CHANNEL, message.encode()))

    async def wake_scheduler(self, due: float) -> None:
        await self._call(lambda: self.redis.publish(keys.SCHEDULE_CHANNEL, repr(due).encode()))
