"""A submit group with one row PostgreSQL refuses: the others still commit.

Validation is bypassed on purpose (rows built with `dataclasses.replace`), so
these prove the store's own safety net on a real PostgreSQL: the shared
statement fails, each member is run again alone, the bad one gets its own
error (INVALID_ARGUMENT for a value it cannot store) and every other is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from dtq.adapters.pg_store import PgStore
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import NewTask, Submitted
from tests.integration.helpers import async_test, new_task, pg_store

pytestmark = pytest.mark.usefixtures("clean")
YEAR_10000 = 253_402_300_800.0  # 10000-01-01T00:00:00Z
BAD_AT = 17  # not the first call: that one flushes alone, the rest share a group


async def submit_all(store: PgStore, tasks: list[NewTask]) -> list[list[Submitted] | BaseException]:
    now = time.time()
    return await asyncio.gather(*(store.insert([t], now) for t in tasks), return_exceptions=True)


async def check_split(store: PgStore, bad: NewTask, keyed: bool) -> BaseException:
    """60 concurrent inserts, `bad` among them; returns the bad one's error."""
    key = {"idempotency_key": "k"} if keyed else {}
    tasks = [new_task(**{k: f"{v}-{i}" for k, v in key.items()}) for i in range(60)]
    tasks[BAD_AT] = bad
    results = await submit_all(store, tasks)
    for i, (task, result) in enumerate(zip(tasks, results, strict=True)):
        if i == BAD_AT:
            assert isinstance(result, BaseException), "the bad row was accepted"
            assert await store.get(task.id) is None
            continue
        assert not isinstance(result, BaseException), f"innocent call {i} failed: {result!r}"
        assert await store.get(task.id) is not None, f"innocent call {i} not stored"
    error = results[BAD_AT]
    assert isinstance(error, BaseException)
    return error


@pytest.mark.parametrize("keyed", [False, True], ids=["one-statement", "with-keys"])
@pytest.mark.parametrize(
    "change",
    [
        {"trace_context": {"traceparent": "00-\x00-01"}},  # jsonb refuses \u0000
        {"idempotency_key": "bad\x00key"},  # text cannot hold NUL
        {"scheduled_at": YEAR_10000},  # beyond Python's datetime
    ],
    ids=["nul-in-trace-context", "nul-in-idempotency-key", "year-10000"],
)
@async_test
async def test_a_value_postgres_cannot_store_fails_only_its_call(
    pg_url: str, change: dict[str, object], keyed: bool
) -> None:
    async with pg_store(pg_url) as store:
        bad = dataclasses.replace(new_task(), **change)  # type: ignore[arg-type]
        error = await check_split(store, bad, keyed)
        assert isinstance(error, DtqError)
        assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "UNSTORABLE_VALUE")


@async_test
async def test_a_constraint_violation_fails_only_its_call(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        bad = dataclasses.replace(new_task(), priority=7)  # type: ignore[arg-type]
        error = await check_split(store, bad, keyed=False)
        # Our bug, not the caller's: it stays an internal error (tasks_priority_check).
        assert not isinstance(error, DtqError)
        assert "tasks_priority_check" in str(error)


@async_test
async def test_a_duplicate_key_inside_a_split_group_is_deduplicated(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        first, again = new_task(idempotency_key="same"), new_task(idempotency_key="same")
        tasks = [new_task(idempotency_key=f"k-{i}") for i in range(20)]
        tasks[5:7] = [first, again]
        tasks[9] = dataclasses.replace(new_task(), idempotency_key="bad\x00")
        results = await submit_all(store, tasks)
        assert isinstance(results[9], DtqError)
        one, two = results[5], results[6]
        assert not isinstance(one, BaseException) and not isinstance(two, BaseException)
        assert one[0].task.id == two[0].task.id == first.id
        assert [one[0].deduplicated, two[0].deduplicated] == [False, True]
