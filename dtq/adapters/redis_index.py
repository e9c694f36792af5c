"""QueueIndex on Redis: which queues exist, their live figures, pause flags,
and rebuilding the ready index from PostgreSQL (keys in redis_keys.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import Batch, RedisCalls, in_pipeline, text
from dtq.domain.model import Priority, QueueStats, Task


class RedisIndex:
    """Redis implementation of `QueueIndex`."""

    def __init__(self, calls: RedisCalls) -> None:
        self._call = calls
        self.redis = calls.redis

    async def queues(self) -> set[str]:
        names = await self._call(lambda: self.redis.smembers(keys.QUEUES))
        return {text(n) for n in names}

    async def set_paused(self, queue: str, paused: bool) -> None:
        async def run() -> None:
            batch = Batch(self.redis)
            if paused:
                batch.pipe.set(keys.paused(queue), b"1")
            else:
                batch.pipe.delete(keys.paused(queue))
            batch.pipe.sadd(keys.QUEUES, queue)
            batch.publish(keys.notify_channel(queue), b"*")
            await batch.execute()

        await self._call(run)

    async def add(self, queues: Sequence[str]) -> None:
        if queues:
            await self._call(lambda: self.redis.sadd(keys.QUEUES, *queues))

    async def remove(self, queue: str) -> None:
        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.srem(keys.QUEUES, queue)
            pipe.delete(keys.paused(queue))
            await pipe.execute()

        await self._call(run)

    async def stats(self, queue: str) -> QueueStats:
        return await self._call(lambda: self._stats(queue))

    async def _stats(self, queue: str) -> QueueStats:
        type_names = sorted(text(t) for t in await self.redis.smembers(keys.types(queue)))
        bucket = int(time.time()) // keys.BUCKET_SECONDS
        buckets = [bucket - i for i in range(6)]
        steps = [(t, p) for t in type_names for p in keys.PRIORITY_ORDER]
        pipe = self.redis.pipeline(transaction=False)
        for t, p in steps:
            pipe.zrange(keys.turns(queue, t, p), 0, -1)
        fair_keys = await pipe.execute()
        # Every ready list: the shared one of each step, then those of its keys.
        lists: list[tuple[str, Priority]] = []
        for (t, p), names in zip(steps, fair_keys, strict=True):
            named = {text(n) for n in names} - {""}
            lists += [(keys.ready(queue, t, p, f), p) for f in ["", *sorted(named)]]
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in lists:
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
        pipe.zcard(keys.leases(queue))
        pipe.exists(keys.paused(queue))
        for kind in ("completed", "failed"):  # GETs: a cluster pipeline refuses MGET
            for b in buckets:
                pipe.get(keys.counter(queue, kind, b))
        await self._call.scripts["clock"](keys=[keys.leases(queue)], client=in_pipeline(pipe))
        out = await pipe.execute()
        by_priority = dict.fromkeys(keys.PRIORITY_ORDER, 0)
        heads: dict[Priority, float] = {}  # priority -> enqueue time (us) of its oldest task
        for i, (_, priority) in enumerate(lists):
            by_priority[priority] += out[2 * i]
            head = out[2 * i + 1]
            if head:
                heads[priority] = min(heads.get(priority, head[0][1]), head[0][1])
        running, paused = out[len(lists) * 2 : len(lists) * 2 + 2]
        counts = out[len(lists) * 2 + 2 : -1]
        done, failed, now = counts[: len(buckets)], counts[len(buckets) :], out[-1]
        now_us = int(now[0]) * 1_000_000 + int(now[1])
        ages = {p: max(0.0, (now_us - t) / 1_000_000) for p, t in heads.items()}
        return QueueStats(
            queue=queue,
            pending_by_priority={Priority(p): n for p, n in by_priority.items()},
            running=running,
            completed_last_minute=sum(int(x) for x in done if x),
            failed_last_minute=sum(int(x) for x in failed if x),
            oldest_pending_age=max(ages.values(), default=0.0),
            oldest_age_by_priority=ages,
            paused=bool(paused),
        )

    async def restore_ready(self, tasks: Sequence[Task]) -> int:
        """Index PENDING tasks that Redis lost; returns how many were missing.
        Each keeps its place: the score is the time it became ready."""
        if not tasks:
            return 0
        by_key: dict[str, dict[bytes, float]] = defaultdict(dict)
        turns: dict[tuple[str, str], None] = {}  # (turns key, fairness key), in order
        for t in tasks:
            queue = keys.queue_tag(t.tenant, t.queue)
            key = keys.ready(queue, t.type, t.priority, t.fairness_key)
            by_key[key][t.id.bytes] = int(t.updated_at * 1e6)
            turns[(keys.turns(queue, t.type, t.priority), t.fairness_key)] = None
        join = self._call.scripts["join_turns"]

        async def run() -> int:
            batch = Batch(self.redis)
            pipe = batch.pipe
            for key, mapping in by_key.items():
                pipe.zadd(key, mapping, nx=True)
            for turns_key, fairness_key in turns:  # one slot per call
                await join(keys=[turns_key], args=[fairness_key], client=in_pipeline(pipe))
            for queue, task_type in {(keys.queue_tag(t.tenant, t.queue), t.type) for t in tasks}:
                pipe.sadd(keys.types(queue), task_type)
                pipe.sadd(keys.QUEUES, queue)
                batch.publish(keys.notify_channel(queue), task_type.encode())
            out = await batch.execute()
            return sum(out[: len(by_key)])

        return await self._call(run)

    async def epoch(self) -> str | None:
        """Marker of an index that was built or checked; gone when Redis lost its data."""
        value = await self._call(lambda: self.redis.get(keys.EPOCH))
        return None if value is None else text(value)

    async def set_epoch(self, value: str) -> None:
        await self._call(lambda: self.redis.set(keys.EPOCH, value))
