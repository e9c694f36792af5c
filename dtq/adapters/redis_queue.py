"""DispatchQueue and WorkerRegistry on Redis.

Multi-step work is one Lua script (adapters/lua/), loaded once and called by
SHA; all keys go in KEYS, all values in ARGV. Only Redis 6.2 commands are used.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis import exceptions as rexc

from dtq.adapters import redis_keys as keys
from dtq.adapters.breaker import CircuitBreaker
from dtq.domain.errors import DtqError
from dtq.domain.model import LeaseRef, Priority, QueueStats, Task, WorkerInfo
from dtq.ports import Liveness, Ready

T = TypeVar("T")
WORKER_TTL = 24 * 3600
_SCRIPTS = ("enqueue", "lease", "extend", "claim_expired")


MAX_CONNECTIONS = 100


def connect(dsn: str, timeout: float) -> aioredis.Redis:
    """A client whose pool waits (up to `timeout`) for a free connection when
    all are busy, instead of failing at once (a burst of worker
    registrations used to get UNAVAILABLE: MaxConnectionsError)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        dsn,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=False,
    )
    return aioredis.Redis(connection_pool=pool)


def _script(name: str) -> str:
    return resources.files("dtq.adapters").joinpath(f"lua/{name}.lua").read_text()


class RedisQueue:
    """Redis implementation of `DispatchQueue` and `WorkerRegistry`."""

    def __init__(self, client: aioredis.Redis, aging_seconds: float = 60.0) -> None:
        self.redis = client
        self.aging_us = int(aging_seconds * 1_000_000)
        self._scripts = {name: client.register_script(_script(name)) for name in _SCRIPTS}
        self.breaker = CircuitBreaker("redis")

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before()  # fails fast while Redis is known to be down
        try:
            result = await op()
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as error:
            self.breaker.failure()
            # The reply names no Python class; the cause stays chained for the log.
            raise DtqError.unavailable("redis", "Redis is unreachable") from error
        except rexc.ResponseError as error:
            if "LOADING" in str(error) or "MASTERDOWN" in str(error):
                self.breaker.failure()
                raise DtqError.unavailable("redis", "Redis is loading its data") from error
            self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def ping(self) -> None:
        await self._call(self.redis.ping)

    # -- ready index -----------------------------------------------------------

    async def enqueue(self, tasks: Sequence[Ready]) -> None:
        if not tasks:
            return
        by_queue: dict[str, list[Ready]] = defaultdict(list)
        for task in tasks:
            by_queue[task.queue].append(task)

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for queue, items in by_queue.items():
                keys_, args = self._enqueue_args(queue, items)
                await self._scripts["enqueue"](keys=keys_, args=args, client=pipe)
            pipe.sadd(keys.QUEUES, *by_queue)
            await pipe.execute()

        await self._call(run)

    @staticmethod
    def _enqueue_args(queue: str, items: list[Ready]) -> tuple[list[str], list[Any]]:
        slot: dict[str, int] = {}
        ready_keys: list[str] = []
        key_types: list[str] = []
        pairs: list[Any] = []
        for item in items:
            key = keys.ready(queue, item.type, item.priority)
            if key not in slot:
                slot[key] = len(ready_keys) + 1
                ready_keys.append(key)
                key_types.append(item.type)
            pairs += [slot[key], item.id.bytes]
        return [keys.types(queue), *ready_keys], [keys.notify_channel(queue), *key_types, *pairs]

    async def remove_ready(self, task: Task) -> None:
        key = keys.ready(task.queue, task.type, task.priority)
        await self._call(lambda: self.redis.zrem(key, task.id.bytes))

    # -- leases -----------------------------------------------------------------

    async def lease(
        self, queue: str, task_types: Sequence[str], tokens: Sequence[str], lease_seconds: float
    ) -> tuple[list[Ready], float]:
        ready_keys = [k for t in task_types for k in keys.ready_triple(queue, t)]
        args: list[Any] = [len(tokens), int(lease_seconds * 1000), self.aging_us]
        args += [bytes.fromhex(t) for t in tokens]
        out = await self._call(
            lambda: self._scripts["lease"](
                keys=[keys.leases(queue), keys.paused(queue), *ready_keys], args=args
            )
        )
        popped = [
            Ready(
                uuid.UUID(bytes=member),
                queue,
                task_types[(int(index) - 1) // 3],
                keys.PRIORITY_ORDER[(int(index) - 1) % 3],
            )
            for member, index in zip(out[1::2], out[2::2], strict=True)
        ]
        return popped, int(out[0]) / 1000

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
            members = [keys.lease_member(r.task_id, r.token) for r in refs]
            await self._call(lambda: self.redis.zrem(keys.leases(queue), *members))

    async def claim_expired(self, queue: str, limit: int) -> list[LeaseRef]:
        out = await self._call(
            lambda: self._scripts["claim_expired"](keys=[keys.leases(queue)], args=[limit])
        )
        return [LeaseRef(*keys.split_member(m)) for m in out]

    # -- queues -----------------------------------------------------------------

    async def queues(self) -> set[str]:
        names = await self._call(lambda: self.redis.smembers(keys.QUEUES))
        return {_text(n) for n in names}

    async def set_paused(self, queue: str, paused: bool) -> None:
        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            if paused:
                pipe.set(keys.paused(queue), b"1")
            else:
                pipe.delete(keys.paused(queue))
            pipe.sadd(keys.QUEUES, queue)
            pipe.publish(keys.notify_channel(queue), b"*")
            await pipe.execute()

        await self._call(run)

    async def count_finished(self, queue: str, completed: int, failed: int) -> None:
        bucket = int(time.time()) // keys.BUCKET_SECONDS

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for kind, n in (("completed", completed), ("failed", failed)):
                if n:
                    key = keys.counter(queue, kind, bucket)
                    pipe.incrby(key, n)
                    pipe.expire(key, 120)
            await pipe.execute()

        if completed or failed:
            await self._call(run)

    async def stats(self, queue: str) -> QueueStats:
        return await self._call(lambda: self._stats(queue))

    async def _stats(self, queue: str) -> QueueStats:
        type_names = sorted(_text(t) for t in await self.redis.smembers(keys.types(queue)))
        bucket = int(time.time()) // keys.BUCKET_SECONDS
        buckets = [bucket - i for i in range(6)]
        pipe = self.redis.pipeline(transaction=False)
        for t in type_names:
            for key in keys.ready_triple(queue, t):
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
        pipe.zcard(keys.leases(queue))
        pipe.exists(keys.paused(queue))
        pipe.mget([keys.counter(queue, "completed", b) for b in buckets])
        pipe.mget([keys.counter(queue, "failed", b) for b in buckets])
        pipe.time()
        out = await pipe.execute()
        by_priority = dict.fromkeys(keys.PRIORITY_ORDER, 0)
        heads: dict[Priority, float] = {}  # priority -> enqueue time (us) of its oldest task
        for i in range(len(type_names) * 3):
            priority = keys.PRIORITY_ORDER[i % 3]
            by_priority[priority] += out[2 * i]
            head = out[2 * i + 1]
            if head:
                heads[priority] = min(heads.get(priority, head[0][1]), head[0][1])
        running, paused, done, failed, now = out[len(type_names) * 6 :]
        now_us = now[0] * 1_000_000 + now[1]
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

    # -- reconciliation -----------------------------------------------------------

    async def restore_ready(self, tasks: Sequence[Task]) -> int:
        """Index PENDING tasks that Redis lost; returns how many were missing.
        Each keeps its place: the score is the time it became ready."""
        if not tasks:
            return 0
        by_key: dict[str, dict[bytes, float]] = defaultdict(dict)
        for t in tasks:
            by_key[keys.ready(t.queue, t.type, t.priority)][t.id.bytes] = int(t.updated_at * 1e6)

        async def run() -> int:
            pipe = self.redis.pipeline(transaction=False)
            for key, mapping in by_key.items():
                pipe.zadd(key, mapping, nx=True)
            for queue, task_type in {(t.queue, t.type) for t in tasks}:
                pipe.sadd(keys.types(queue), task_type)
                pipe.sadd(keys.QUEUES, queue)
                pipe.publish(keys.notify_channel(queue), task_type.encode())
            out = await pipe.execute()
            return sum(out[: len(by_key)])

        return await self._call(run)

    async def restore_leases(self, items: Sequence[tuple[str, LeaseRef, float]]) -> int:
        """Re-create leases of RUNNING tasks (queue, lease, deadline in Unix s)."""
        if not items:
            return 0
        by_queue: dict[str, dict[bytes, int]] = defaultdict(dict)
        for queue, ref, deadline in items:
            by_queue[queue][keys.lease_member(ref.task_id, ref.token)] = int(deadline * 1000)

        async def run() -> int:
            pipe = self.redis.pipeline(transaction=False)
            for queue, mapping in by_queue.items():
                pipe.zadd(keys.leases(queue), mapping, nx=True)
                pipe.sadd(keys.QUEUES, queue)
            out = await pipe.execute()
            return sum(out[0::2])

        return await self._call(run)

    async def epoch(self) -> str | None:
        """Marker of an index that was built or checked; gone when Redis lost its data."""
        value = await self._call(lambda: self.redis.get(keys.EPOCH))
        return None if value is None else _text(value)

    async def set_epoch(self, value: str) -> None:
        await self._call(lambda: self.redis.set(keys.EPOCH, value))

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
            pipe = self.redis.pipeline(transaction=False)
            for queue, (refs, completed, failed) in finished.items():
                if refs:
                    members = [keys.lease_member(r.task_id, r.token) for r in refs]
                    pipe.zrem(keys.leases(queue), *members)
                for kind, n in (("completed", completed), ("failed", failed)):
                    if n:
                        key = keys.counter(queue, kind, bucket)
                        pipe.incrby(key, n)
                        pipe.expire(key, 120)
            if changed:
                pipe.publish(
                    keys.CHANGES_CHANNEL, keys.changes((t.id, t.state.value) for t in changed)
                )
            await pipe.execute()

        await self._call(run)

    async def publish_cancel(self, task: Task) -> None:
        message = json.dumps({"worker_id": task.worker_id, "task_id": str(task.id)})
        await self._call(lambda: self.redis.publish(keys.CANCEL_CHANNEL, message.encode()))

    async def wake_scheduler(self, due: float) -> None:
        await self._call(lambda: self.redis.publish(keys.SCHEDULE_CHANNEL, repr(due).encode()))

    # -- worker registry -----------------------------------------------------------

    async def upsert(self, worker: WorkerInfo) -> None:
        record = {
            "info": json.dumps(
                {
                    "hostname": worker.hostname,
                    "pid": worker.pid,
                    "queues": list(worker.queues),
                    "task_types": list(worker.task_types),
                    "concurrency": worker.concurrency,
                    "version": worker.version,
                    "labels": worker.labels,
                    "registered_at": worker.registered_at,
                    "metrics_address": worker.metrics_address,
                }
            ),
            "active": worker.active_tasks,
            "draining": int(worker.draining),
            "last_seen": worker.last_seen_at,
        }

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(keys.worker(worker.id), mapping=cast(Any, record))
            pipe.expire(keys.worker(worker.id), WORKER_TTL)
            pipe.zadd(keys.WORKERS, {worker.id: worker.last_seen_at})
            await pipe.execute()

        await self._call(run)

    async def touch(self, worker_id: str, active_tasks: int, draining: bool, now: float) -> None:
        await self.touch_many([Liveness(worker_id, active_tasks, draining, now)])

    async def touch_many(self, rows: Sequence[Liveness]) -> None:
        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for row in rows:
                key = keys.worker(row.worker_id)
                live: dict[str, float] = {
                    "active": row.active_tasks,
                    "draining": int(row.draining),
                    "last_seen": row.last_seen_at,
                }
                pipe.hset(key, mapping=cast(Any, live))
                pipe.expire(key, WORKER_TTL)
                pipe.zadd(keys.WORKERS, {row.worker_id: row.last_seen_at})
            await pipe.execute()

        await self._call(run)

    async def get(self, worker_id: str) -> WorkerInfo | None:
        record = await self._call(lambda: self.redis.hgetall(keys.worker(worker_id)))
        return _worker(worker_id, cast(dict[bytes, bytes], record))

    async def list_workers(self) -> list[WorkerInfo]:
        async def run() -> list[WorkerInfo]:
            cutoff = time.time() - WORKER_TTL
            await self.redis.zremrangebyscore(keys.WORKERS, "-inf", cutoff)
            ids = [_text(i) for i in await self.redis.zrevrange(keys.WORKERS, 0, -1)]
            pipe = self.redis.pipeline(transaction=False)
            for worker_id in ids:
                pipe.hgetall(keys.worker(worker_id))
            records = await pipe.execute()
            found = [_worker(i, r) for i, r in zip(ids, records, strict=True)]
            return [w for w in found if w]

        return await self._call(run)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _worker(worker_id: str, record: dict[bytes, bytes]) -> WorkerInfo | None:
    if not record or b"info" not in record:
        return None
    info = json.loads(record[b"info"])
    return WorkerInfo(
        id=worker_id,
        hostname=info["hostname"],
        pid=info["pid"],
        queues=tuple(info["queues"]),
        task_types=tuple(info["task_types"]),
        concurrency=info["concurrency"],
        version=info["version"],
        labels=info["labels"],
        registered_at=info["registered_at"],
        last_seen_at=float(record.get(b"last_seen", b"0")),
        active_tasks=int(record.get(b"active", b"0")),
        draining=record.get(b"draining") == b"1",
        metrics_address=info.get("metrics_address", ""),
    )
