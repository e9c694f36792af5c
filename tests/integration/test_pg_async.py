"""AsyncPg (dtq/adapters/pg_async.py): single statements on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg2
import pytest

from dtq.adapters.breaker import CircuitBreaker
from dtq.adapters.pg_async import AsyncPg, libpq_dsn
from dtq.domain.errors import Code, DtqError
from tests.integration.helpers import async_test, sa_dsn


@contextlib.asynccontextmanager
async def pool(pg_url: str, size: int) -> AsyncIterator[AsyncPg]:
    pg = AsyncPg(sa_dsn(pg_url), CircuitBreaker("test"), size=size)
    try:
        yield pg
    finally:
        pg.close()


SQL = "SELECT v.n::int * %(k)s AS n, v.s AS s FROM (VALUES %s) AS v(n, s) ORDER BY 1"


def test_libpq_dsn_drops_the_driver_and_keeps_the_password() -> None:
    dsn = libpq_dsn("postgresql+psycopg2://u:p%40ss@h:5433/db")
    assert dsn == "postgresql://u:p%40ss@h:5433/db"


@async_test
async def test_rows_and_named_parameters_make_one_statement(pg_url: str) -> None:
    async with pool(pg_url, size=4) as pg:
        rows = [(3, "it's"), (1, "100%s"), (2, None)]
        names, out = await pg.fetch(SQL, rows, "(%s, %s)", {"k": 10})
        assert names == ["n", "s"]
        assert out == [(10, "100%s"), (20, None), (30, "it's")]  # quoting is psycopg2's


@async_test
async def test_a_bad_statement_raises_and_the_pool_stays_usable(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg:
        with pytest.raises(psycopg2.errors.UndefinedTable):
            await pg.fetch("SELECT * FROM no_such_table, (VALUES %s) v(x)", [(1,)], "(%s)", {})
        _, out = await pg.fetch(SQL, [(1, "a")], "(%s, %s)", {"k": 2})
        assert out == [(2, "a")]


@async_test
async def test_calls_beyond_the_pool_size_wait_for_a_connection(pg_url: str) -> None:
    async with pool(pg_url, size=2) as pg:
        slow = "SELECT pg_sleep(0.2), v.x FROM (VALUES %s) v(x)"
        began = asyncio.get_running_loop().time()
        await asyncio.gather(*(pg.fetch(slow, [(i,)], "(%s)", {}) for i in range(4)))
        took = asyncio.get_running_loop().time() - began
        assert 0.4 <= took < 2.0, took  # two rounds of two
        assert len(pg._idle) == 2


@async_test
async def test_an_unreachable_server_is_unavailable_and_counts_on_the_breaker() -> None:
    breaker = CircuitBreaker("test", threshold=2, cooldown=60)
    pg = AsyncPg("postgresql+psycopg2://nobody@127.0.0.1:1/none", breaker, timeout=1.0)
    for _ in range(2):
        with pytest.raises(DtqError) as caught:
            await pg.fetch(SQL, [(1, "a")], "(%s, %s)", {"k": 1})
        assert caught.value.code == Code.UNAVAILABLE
    with pytest.raises(DtqError):  # open now: fails without trying
        await pg.fetch(SQL, [(1, "a")], "(%s, %s)", {"k": 1})
    assert breaker.state.name == "OPEN"


@async_test
async def test_an_idle_connection_the_server_dropped_is_replaced_not_used(pg_url: str) -> None:
    async with pool(pg_url, size=1) as pg:
        _, out = await pg.fetch(
            "SELECT pg_backend_pid(), v.x FROM (VALUES %s) v(x)", [(1,)], "(%s)", {}
        )
        ((old_pid, _),) = out
        admin = psycopg2.connect(pg_url)
        admin.autocommit = True
        with admin.cursor() as cur:  # what a restart of PostgreSQL does to it
            cur.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        admin.close()
        await asyncio.sleep(0.6)  # idle long enough to be checked
        _, out = await pg.fetch(
            "SELECT pg_backend_pid(), v.x FROM (VALUES %s) v(x)", [(2,)], "(%s)", {}
        )
        ((new_pid, x),) = out
        assert (x, new_pid != old_pid) == (2, True)
