"""WorkerRegistry on Redis: each worker's registration and liveness, kept a
day after it was last seen (keys in redis_keys.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import RedisCalls, text
from dtq.domain.model import WorkerInfo
from dtq.domain.tenants import DEFAULT, split_tenant_queue
from dtq.ports import Liveness

WORKER_TTL = 24 * 3600


class RedisWorkers:
    """Redis implementation of `WorkerRegistry`."""

    def __init__(self, calls: RedisCalls) -> None:
        self._call = calls
        self.redis = calls.redis

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
                    "tenant": worker.tenant,
                }
            ),
            "active": worker.active_tasks,
            "draining": int(worker.draining),
            "last_seen": worker.last_seen_at,
        }

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            key = keys.worker(worker.tenant, worker.id)
            pipe.hset(key, mapping=cast(Any, record))
            pipe.expire(key, WORKER_TTL)
            _seen(pipe, worker.tenant, worker.id, worker.last_seen_at)
            await pipe.execute()

        await self._call(run)

    async def touch(
        self, worker_id: str, active_tasks: int, draining: bool, now: float, tenant: str = DEFAULT
    ) -> None:
        await self.touch_many([Liveness(worker_id, active_tasks, draining, now, tenant)])

    async def touch_many(self, rows: Sequence[Liveness]) -> None:
        async def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for row in rows:
                key = keys.worker(row.tenant, row.worker_id)
                live: dict[str, float] = {
                    "active": row.active_tasks,
                    "draining": int(row.draining),
                    "last_seen": row.last_seen_at,
                }
                pipe.hset(key, mapping=cast(Any, live))
                pipe.expire(key, WORKER_TTL)
                _seen(pipe, row.tenant, row.worker_id, row.last_seen_at)
            await pipe.execute()

        await self._call(run)

    async def get(self, worker_id: str, tenant: str = DEFAULT) -> WorkerInfo | None:
        record = await self._call(lambda: self.redis.hgetall(keys.worker(tenant, worker_id)))
        return _worker(worker_id, cast(dict[bytes, bytes], record))

    async def page(
        self, offset: int, limit: int, tenant: str | None = None
    ) -> tuple[list[WorkerInfo], int]:
        index = keys.WORKERS if tenant is None else keys.workers_of(tenant)

        async def run() -> tuple[list[WorkerInfo], int]:
            cutoff = time.time() - WORKER_TTL
            await self.redis.zremrangebyscore(index, "-inf", cutoff)
            total = await self.redis.zcard(index)
            end = offset + limit - 1
            names = [text(i) for i in await self.redis.zrevrange(index, offset, end)]
            if tenant is not None:
                names = [keys.worker_member(tenant, n) for n in names]
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(keys.worker(*split_tenant_queue(name)))
            records = await pipe.execute()
            found = [
                _worker(split_tenant_queue(n)[1], r) for n, r in zip(names, records, strict=True)
            ]
            return [w for w in found if w], int(total)

        return await self._call(run)

    async def count_seen_since(self, since: float, tenant: str | None = None) -> int:
        index = keys.WORKERS if tenant is None else keys.workers_of(tenant)
        return int(await self._call(lambda: self.redis.zcount(index, since, "+inf")))


def _seen(pipe: Any, tenant: str, worker_id: str, at: float) -> None:
    pipe.zadd(keys.WORKERS, {keys.worker_member(tenant, worker_id): at})
    pipe.zadd(keys.workers_of(tenant), {worker_id: at})


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
        tenant=info.get("tenant", DEFAULT),
    )
