"""Small helpers of the integration tests: adapters on the session's real
PostgreSQL and Redis, async test bodies, and task builders."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from google.protobuf import struct_pb2

from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_store import PgStore
from dtq.adapters.redis_conn import RedisCalls, connect
from dtq.adapters.redis_queue import RedisQueue
from dtq.domain import validation
from dtq.domain.model import NewTask, Priority
from dtq.domain.validation import Limits, SubmitSpec
from dtq.ports import Ready

LIMITS = Limits()
TEST_DEADLINE = 30.0  # seconds any one async test body may take


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an `async def` test in its own event loop, with a deadline."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_DEADLINE))

    return wrapper


def sa_dsn(pg_url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if pg_url.startswith(prefix):
            return "postgresql+psycopg2://" + pg_url[len(prefix) :]
    return pg_url


@contextlib.asynccontextmanager
async def pg_store(pg_url: str, pool_size: int = 8) -> AsyncIterator[PgStore]:
    pg = Pg(sa_dsn(pg_url), size=pool_size)
    try:
        yield PgStore(pg)
    finally:
        pg.close()


@contextlib.asynccontextmanager
async def redis_queue(redis_url: str, aging_seconds: float = 60.0) -> AsyncIterator[RedisQueue]:
    client = connect(redis_url, 2.0)
    try:
        yield RedisQueue(RedisCalls(client), aging_seconds=aging_seconds)
    finally:
        await client.aclose()


def token() -> str:
    return secrets.token_hex(16)


PAYLOAD = struct_pb2.Struct(fields={"to": struct_pb2.Value(string_value="a@b.c")})
PAYLOAD_BYTES = PAYLOAD.SerializeToString(deterministic=True)  # as the API stores it


def new_task(now: float | None = None, **spec: Any) -> NewTask:
    """A validated submission (`spec` as SubmitSpec fields; a default type)."""
    fields: dict[str, Any] = {"type": "email.send", "payload": PAYLOAD_BYTES, **spec}
    return validation.new_task(SubmitSpec(**fields), LIMITS, time.time() if now is None else now)


def with_lease(task: NewTask, seconds: float) -> NewTask:
    """`task` with a lease shorter than the API allows (tests wait less)."""
    return dataclasses.replace(task, lease_duration=seconds)


def ready(task_type: str = "t", priority: Priority = Priority.MEDIUM, queue: str = "q") -> Ready:
    return Ready(new_task(type=task_type).id, queue, task_type, priority)
