"""The backlog workload: a large backlog of queued tasks (in a paused queue of
its own, so nothing runs it), then the burst again.

Reports what each queued task costs: in Redis (the queue's keys measured with
MEMORY USAGE, and the instance's `used_memory` delta, which other users of the
same Redis blur) and in PostgreSQL (`pg_total_relation_size('tasks')` delta:
heap, indexes and TOAST). The backlog stays behind: use a throwaway database."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import create_engine, text

from dtq.bench import burst
from dtq.bench.api import Api
from dtq.v1 import admin_service_pb2


@dataclass(frozen=True)
class BacklogConfig:
    tasks: int = 1_000_000
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_dsn: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/dtq"


@dataclass(frozen=True)
class Sizes:
    redis_used: int
    redis_keys: int  # MEMORY USAGE of the backlog queue's keys
    pg_tasks: int


def sizes(config: BacklogConfig, queue: str) -> Sizes:
    client = redis.Redis.from_url(config.redis_url)
    try:
        used = int(client.info("memory")["used_memory"])
        keys = 0
        for key in client.scan_iter(match=f"dtq:{{{queue}}}:*", count=1000):
            keys += int(client.memory_usage(key, samples=0) or 0)
    finally:
        client.close()
    engine = create_engine(config.database_dsn)
    try:
        with engine.connect() as conn:
            pg = int(conn.execute(text("SELECT pg_total_relation_size('tasks')")).scalar_one())
    finally:
        engine.dispose()
    return Sizes(used, keys, pg)


async def fill(api: Api, queue: str, n: int, batch: burst.BurstConfig) -> float:
    """Submit `n` tasks to the paused `queue`; returns the accepted rate."""
    await api.admin.PauseQueue(admin_service_pb2.PauseQueueRequest(queue=queue), timeout=10)
    sent = await burst.submit_batches(api, queue, n, batch.batch_size, batch.batch_callers)
    if len(sent.ids) != n:
        raise RuntimeError(f"backlog: {n - len(sent.ids)} submissions failed: {sent.errors}")
    return len(sent.ids) / sent.submit_seconds


def _slowdown(base: dict[str, Any], now: dict[str, Any]) -> dict[str, float]:
    """Fraction by which each rate fell (negative: it rose)."""
    return {
        f"{kind}_{figure}": round(1 - now[kind][figure] / base[kind][figure], 3)
        for kind in ("single", "batch")
        for figure in ("accepted_per_s", "e2e_tasks_per_s")
    }


async def run(
    api: Api,
    queue: str,
    config: BacklogConfig,
    burst_config: burst.BurstConfig,
    baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    if baseline is None:
        baseline = await burst.run(api, queue, burst_config)
    backlog_queue = f"{queue}-backlog"
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, sizes, config, backlog_queue)
    began = time.perf_counter()
    rate = await fill(api, backlog_queue, config.tasks, burst_config)
    filled = time.perf_counter() - began
    after = await loop.run_in_executor(None, sizes, config, backlog_queue)
    again = await burst.run(api, queue, burst_config)
    n = config.tasks
    return {
        "backlog_tasks": n,
        "fill_seconds": round(filled, 1),
        "fill_accepted_per_s": round(rate, 1),
        "redis_bytes_per_task": round((after.redis_keys - before.redis_keys) / n, 1),
        "redis_used_memory_bytes_per_task": round((after.redis_used - before.redis_used) / n, 1),
        "pg_bytes_per_task": round((after.pg_tasks - before.pg_tasks) / n, 1),
        "burst_before": {k: baseline[k] for k in ("single", "batch")},
        "burst_with_backlog": {k: again[k] for k in ("single", "batch")},
        "slowdown": _slowdown(baseline, again),
    }
