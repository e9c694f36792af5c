"""What every PostgreSQL adapter shares: the engine, the thread pool that runs
blocking psycopg2 calls off the event loop, the asynchronous connections the hot
single-statement writes use on the loop (`AsyncPg`), and the circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import psycopg2
from sqlalchemy import create_engine, exc, text

from dtq.adapters.breaker import CircuitBreaker
from dtq.adapters.pg_async import AsyncPg
from dtq.domain.errors import Code, DtqError

T = TypeVar("T")
# A value PostgreSQL (or psycopg2, converting it) refused: the data's fault.
REFUSED = (psycopg2.DataError, exc.DataError, ValueError, OverflowError)


def own_error(error: Exception) -> bool:
    """An error of one statement (its data), not of the connection (those the
    adapters raise as DtqError): the statement did not commit, and members of
    a group commit can be retried alone (see GroupCommit)."""
    return not isinstance(error, DtqError)


def refused(error: Exception) -> DtqError:
    """INVALID_ARGUMENT for a request with a value the database cannot store."""
    cause = error.orig if isinstance(error, exc.DBAPIError) else error
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return DtqError(
        Code.INVALID_ARGUMENT, "UNSTORABLE_VALUE", f"a value cannot be stored: {detail}"
    )


class PgBase:
    """Engine, pool and breaker; `_run` runs a blocking call off the event loop."""

    def __init__(self, dsn: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        self.engine = create_engine(
            dsn,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout,
            # No pre-ping: it cost a round trip on every checkout. After a
            # restart of PostgreSQL the first call on a dead connection fails
            # (UNAVAILABLE, which callers retry) and SQLAlchemy then replaces
            # every pooled connection at once.
            pool_pre_ping=False,
            connect_args={
                "connect_timeout": max(1, round(timeout)),
                # Ack after commit: never let a server default weaken durability.
                "options": f"-c statement_timeout={round(timeout * 1000)} -c synchronous_commit=on",
                "application_name": "dtq",
            },
        )
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="pg")
        self.breaker = CircuitBreaker("postgres")
        # The hot single-statement writes run on the event loop (see pg_async).
        self.aio = AsyncPg(dsn, self.breaker, size=4, timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.aio.close()
        self.engine.dispose()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self.breaker.before()  # fails fast while PostgreSQL is known to be down
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = fn(*args)
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            self.breaker.failure()
            raise DtqError.unavailable("postgres", "PostgreSQL is unreachable") from error
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
