"""How every Redis adapter reaches Redis: one client, one circuit breaker,
the Lua scripts.

Multi-step work is one Lua script (adapters/lua/), loaded once and called by
SHA; all keys go in KEYS, all values in ARGV. Only Redis 6.2 commands are used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc

from dtq.adapters.breaker import CircuitBreaker
from dtq.domain.errors import DtqError

T = TypeVar("T")
MAX_CONNECTIONS = 100
SCRIPTS = (
    "enqueue",
    "join_turns",
    "lease",
    "extend",
    "claim_expired",
    "end_leases",
    "restore_leases",
    "take_tokens",
)


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


class RedisCalls:
    """Runs Redis operations: fails fast while Redis is known to be down, and
    turns losing Redis into UNAVAILABLE (naming no Python class)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.scripts = {name: client.register_script(_script(name)) for name in SCRIPTS}
        self.breaker = CircuitBreaker("redis")

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before()
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
        await self(self.redis.ping)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
