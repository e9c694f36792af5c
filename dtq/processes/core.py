"""The core every server-side process shares: the adapters, built from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dtq import metrics
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_store import PgStore
from dtq.adapters.redis_conn import Client, RedisCalls, connect
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.adapters.redis_workers import RedisWorkers
from dtq.app.leasing import Leasing
from dtq.domain.errors import DtqError
from dtq.domain.retry import RetryPolicy
from dtq.domain.validation import Limits
from dtq.ops_http import HealthBoard
from dtq.ports import SystemClock
from dtq.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Core:
    """The adapters every server-side process shares."""

    settings: Settings
    pg: Pg
    store: PgStore
    redis: Client
    queue: RedisQueue
    index: RedisIndex
    workers: RedisWorkers
    leasing: Leasing
    clock: SystemClock

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            s.max_payload_bytes,
            s.worker_max_retries,
            s.default_timeout,
            s.lease_duration,
            s.max_watches_per_caller,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self.pg.close()


def build_core(settings: Settings) -> Core:
    metrics.cap_labels(
        settings.metrics_max_queues, settings.metrics_max_types, settings.metrics_max_tenants
    )
    pg = Pg(settings.database_dsn, settings.database_pool_size, settings.database_timeout)
    store = PgStore(pg)
    client = connect(settings.redis_dsn, settings.redis_timeout)
    calls = RedisCalls(client)
    queue = RedisQueue(calls, settings.priority_aging_seconds)
    clock = SystemClock()
    leasing = Leasing(
        store,
        queue,
        clock,
        RetryPolicy(settings.worker_retry_backoff_base, settings.worker_max_retry_backoff),
        settings.lease_duration,
    )
    return Core(
        settings, pg, store, client, queue, RedisIndex(calls), RedisWorkers(calls), leasing, clock
    )


async def watch_dependencies(core: Core, board: HealthBoard, every: float = 5.0) -> None:
    """Record PostgreSQL and Redis health on the board, forever."""
    checks: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("postgres", core.store.ping),
        ("redis", core.queue.ping),
    ]
    while True:
        for name, ping in checks:
            try:
                await asyncio.wait_for(ping(), timeout=2.0)
                board.set(name, True, "ok")
            except (DtqError, TimeoutError) as error:
                board.set(name, False, str(error) or "timeout")
        await asyncio.sleep(every)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
