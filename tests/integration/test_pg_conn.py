"""Pg (dtq/adapters/pg_conn.py): statements and transactions on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg2
import pytest

from dtq.adapters.breaker import CircuitBreaker
from dtq.adapters.pg_conn import Pg, Values, libpq_dsn
from dtq.adapters.pg_sql import Sql
from dtq.domain.errors import Code, DtqError, OutcomeUnknown
from tests.integration.helpers import async_test, sa_dsn


@contextlib.asynccontextmanager
async def pool(pg_url: str, size: int) -> AsyncIterator[Pg]:
    pg = Pg(sa_dsn(pg_url), size=size)
    try:
        yield pg
    finally:
        pg.close()


def pair(row: Any) -> tuple[Any, Any]:
    return row["n"], row["s"]


SQL = Sql(
    "SELECT v.n::int * %(k)s AS n, v.s AS s FROM (VALUES %(rows)s) AS v(n, s) ORDER BY 1", pair
)
PID = Sql("SELECT pg_backend_pid() AS pid", lambda row: row["pid"])
NOTES = Sql("SELECT note FROM notes ORDER BY note", lambda row: row["note"])


def note(text: str) -> tuple[Sql[Any], dict[str, Any]]:
    return Sql("INSERT INTO notes VALUES (%(note)s) RETURNING note", dict), {"note": text}


@contextlib.asynccontextmanager
async def notes(pg: Pg) -> AsyncIterator[None]:
    """A table of notes for the test, dropped after it."""
    await pg.fetch(Sql("CREATE TABLE notes (note text PRIMARY KEY)", dict))
    try:
        yield
    finally:
        await pg.fetch(Sql("DROP TABLE notes", dict))


def terminate(pg_url: str, pid: int) -> None:
    """What a restart of PostgreSQL does to a connection."""
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()


def test_libpq_dsn_drops_the_driver_and_keeps_the_password() -> None:
    dsn = libpq_dsn("postgresql+psycopg2://u:p%40ss@h:5433/db")
    assert dsn == "postgresql://u:p%40ss@h:5433/db"


@async_test
async def test_rows_and_named_parameters_make_one_statement(pg_url: str) -> None:
    async with pool(pg_url, size=4) as pg:
        rows = Values([(3, "it's"), (1, "100%s"), (2, None)])
        out = await pg.fetch(SQL, {"rows": rows, "k": 10})
        assert out == [(10, "100%s"), (20, None), (30, "it's")]  # quoting is psycopg2's


@async_test
async def test_a_bad_statement_raises_and_the_pool_stays_usable(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg:
        with pytest.raises(psycopg2.errors.UndefinedTable):
            await pg.fetch(Sql("SELECT * FROM no_such_table", dict))
        assert await pg.fetch(SQL, {"rows": Values([(1, "a")]), "k": 2}) == [(2, "a")]
        assert pg.breaker.state.name == "CLOSED"


@async_test
async def test_calls_beyond_the_pool_size_wait_for_a_connection(pg_url: str) -> None:
    async with pool(pg_url, size=2) as pg:
        slow = Sql("SELECT pg_sleep(0.2), %(i)s AS i", dict)
        began = asyncio.get_running_loop().time()
        await asyncio.gather(*(pg.fetch(slow, {"i": i}) for i in range(4)))
        took = asyncio.get_running_loop().time() - began
        assert 0.4 <= took < 2.0, took  # two rounds of two
        assert len(pg._idle) == 2


@async_test
async def test_an_unreachable_server_is_unavailable_and_counts_on_the_breaker() -> None:
    pg = Pg("postgresql+psycopg2://nobody@127.0.0.1:1/none", timeout=1.0)
    pg.breaker = breaker = CircuitBreaker("test", threshold=2, cooldown=60)
    for _ in range(2):
        with pytest.raises(DtqError) as caught:
            await pg.fetch(PID)
        assert caught.value.code == Code.UNAVAILABLE
    with pytest.raises(DtqError):  # open now: fails without trying
        async with pg.transaction():
            pass
    assert breaker.state.name == "OPEN"


@async_test
async def test_an_idle_connection_the_server_dropped_is_replaced_not_used(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg:
        (old_pid,) = await pg.fetch(PID)
        terminate(pg_url, old_pid)
        await asyncio.sleep(0.6)  # idle long enough to be checked
        (new_pid,) = await pg.fetch(PID)
        assert new_pid != old_pid


@async_test
async def test_a_transaction_commits_its_statements_together(pg_url: str) -> None:
    async with pool(pg_url, size=2) as pg, notes(pg):
        async with pg.transaction() as tx:
            await tx.fetch(*note("a"))
            await tx.fetch(*note("b"))
            assert await pg.fetch(NOTES) == []  # another connection sees none yet
        assert await pg.fetch(NOTES) == ["a", "b"]


@async_test
async def test_a_transaction_whose_block_raises_is_rolled_back(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg, notes(pg):
        with pytest.raises(KeyError):
            async with pg.transaction() as tx:
                await tx.fetch(*note("a"))
                raise KeyError("the caller changed its mind")
        with pytest.raises(psycopg2.errors.UniqueViolation):
            async with pg.transaction() as tx:
                await tx.fetch(*note("b"))
                await tx.fetch(*note("b"))
        (pid,) = await pg.fetch(PID)
        assert await pg.fetch(NOTES) == []
        assert await pg.fetch(PID) == [pid]  # the same connection, reused


@async_test
async def test_a_connection_lost_inside_a_transaction_committed_nothing(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg, notes(pg):
        with pytest.raises(DtqError) as caught:
            async with pg.transaction() as tx:
                await tx.fetch(*note("a"))
                (pid,) = await tx.fetch(PID)
                terminate(pg_url, pid)
                await tx.fetch(*note("b"))
        assert caught.value.code == Code.UNAVAILABLE
        assert not isinstance(caught.value, OutcomeUnknown), "it cannot have committed"
        assert await pg.fetch(NOTES) == []


@async_test
async def test_a_write_whose_answer_was_lost_has_an_unknown_outcome(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg, notes(pg):  # opens the connection
        pg.timeout = 0.3  # the client gives up long before the server (5 s) does
        locker = psycopg2.connect(pg_url)
        try:
            with locker.cursor() as cur:  # the INSERT waits for this lock
                cur.execute("LOCK TABLE notes IN EXCLUSIVE MODE")
            with pytest.raises(OutcomeUnknown):
                await pg.fetch(*note("a"))
        finally:
            locker.rollback()  # the waiting INSERT goes on, and commits
            locker.close()
        pg.timeout = 5.0
        for _ in range(100):
            if await pg.fetch(NOTES):
                break
            await asyncio.sleep(0.02)
        assert await pg.fetch(NOTES) == ["a"], "it did commit"
